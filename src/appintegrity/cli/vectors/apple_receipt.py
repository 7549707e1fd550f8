"""The ``apple-receipt`` vector kind: validate an App Attest receipt at ``verify_at``.

Input: ``receipt`` (standard base64), ``app_id`` and ``public_key`` (the attested key) the receipt
must name, and optionally ``trust_roots_pem`` (test CAs replacing Apple Root CA - G3). The
conclusion spells fields as the vectors' ``expect`` does: times in ISO 8601 UTC, ``client_hash``
in standard base64.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography import x509

from appintegrity.apple.receipt import verify_receipt
from appintegrity.cli.vectors import (
    VectorFormatError,
    app_id_field,
    public_key_field,
    text_field,
    text_list_field,
)
from appintegrity.encoding import b64_encode


def run(inputs: Mapping[str, object], verify_at: datetime) -> dict[str, object]:
    """Verify the vector's receipt; raise ``AppleVerificationError`` when it does not check out."""
    receipt_text = text_field(inputs, "receipt")
    app_id = app_id_field(inputs)
    public_key = public_key_field(inputs, "public_key")
    roots_pem = text_list_field(inputs, "trust_roots_pem")

    roots = None if roots_pem is None else [_certificate(pem) for pem in roots_pem]
    receipt = verify_receipt(
        receipt_text, now=verify_at, app_id=app_id, public_key=public_key, trust_roots=roots
    )
    conclusion: dict[str, object] = {
        "valid": True,
        "type": receipt.type.value,
        "app_id": receipt.app_id,
        "environment": receipt.environment,
        "creation_time": _time(receipt.creation_time),
        "expiration_time": _time(receipt.expiration_time),
        "client_hash": b64_encode(receipt.client_hash),
        "token": receipt.token,
        "public_key": b64_encode(receipt.public_key),
    }
    if receipt.not_before is not None:
        conclusion["not_before"] = _time(receipt.not_before)
    if receipt.risk_metric is not None:
        conclusion["risk_metric"] = receipt.risk_metric
    return conclusion


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except ValueError as exc:
        raise VectorFormatError(f"input.trust_roots_pem holds an unusable PEM: {exc}") from exc
