"""The ``apple-attestation`` vector kind: Apple's attestation steps, then the receipt beside it.

The receipt is validated as its own step and reported as ``receipt_valid``; a receipt that does
not validate never makes the attestation invalid (it feeds fraud assessment, not the verdict).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appintegrity.apple import AppAttestVerifier, Environment, load_public_key
from appintegrity.apple.attestation import MIN_CLIENT_DATA_HASH_BYTES
from appintegrity.apple.receipt import verify_receipt
from appintegrity.cli.vectors import (
    VectorFormatError,
    app_id_field,
    text_field,
    text_list_field,
)
from appintegrity.encoding import EncodingError, b64_encode, b64decode_lenient
from appintegrity.errors import AppleVerificationError


def run(inputs: Mapping[str, object], verify_at: datetime) -> dict[str, object]:
    """Verify the vector's attestation; raise ``AppleVerificationError`` when it fails."""
    attestation = text_field(inputs, "attestation")
    key_id = text_field(inputs, "key_id")
    app_id = app_id_field(inputs)
    environment_text = text_field(inputs, "environment")
    try:
        environment = Environment(environment_text)
    except ValueError:
        raise VectorFormatError(
            f"input.environment must be 'production' or 'development', not {environment_text!r}"
        ) from None
    challenge, client_data_hash = _challenge(inputs)
    roots = trust_roots(inputs)

    verifier = AppAttestVerifier(app_id, environment=environment, trust_roots=roots)
    key = verifier.verify_attestation(
        attestation,
        key_id=key_id,
        challenge=challenge,
        client_data_hash=client_data_hash,
        now=verify_at,
    )
    public_key_pem = (
        load_public_key(key.public_key)
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    conclusion: dict[str, object] = {
        "valid": True,
        "key_id": key.key_id_b64,
        "app_id": key.app_id,
        "environment": key.environment.value,
        "public_key_pem": public_key_pem,
        "counter": key.counter,
        "receipt_present": bool(key.receipt),
    }
    if key.extensions is not None:
        conclusion["extensions"] = json_safe(dict(key.extensions))
    conclusion.update(_receipt_verdict(key.receipt, key.public_key, app_id, verify_at, roots))
    return conclusion


def _challenge(inputs: Mapping[str, object]) -> tuple[str | bytes | None, bytes | None]:
    given = [
        name for name in ("challenge", "challenge_b64", "client_data_hash_b64") if name in inputs
    ]
    if len(given) != 1:
        raise VectorFormatError(
            "input needs exactly one of challenge, challenge_b64, client_data_hash_b64"
        )
    name = given[0]
    text = text_field(inputs, name)
    if name == "challenge":
        return text, None
    try:
        raw = b64decode_lenient(text)
    except EncodingError as exc:
        raise VectorFormatError(f"input.{name} is not base64 ({exc})") from exc
    if name == "client_data_hash_b64" and len(raw) < MIN_CLIENT_DATA_HASH_BYTES:
        raise VectorFormatError(
            f"input.client_data_hash_b64 must be at least {MIN_CLIENT_DATA_HASH_BYTES} bytes"
        )
    return (raw, None) if name == "challenge_b64" else (None, raw)


def trust_roots(inputs: Mapping[str, object]) -> list[x509.Certificate] | None:
    """``trust_roots_pem``: PEM roots replacing Apple's (test CAs only)."""
    pems = text_list_field(inputs, "trust_roots_pem")
    if pems is None:
        return None
    roots: list[x509.Certificate] = []
    for pem in pems:
        try:
            roots.extend(x509.load_pem_x509_certificates(pem.encode("ascii")))
        except ValueError as exc:
            raise VectorFormatError(f"input.trust_roots_pem holds an unusable PEM ({exc})") from exc
    if not roots:
        raise VectorFormatError("input.trust_roots_pem holds no certificate")
    return roots


def _receipt_verdict(
    receipt: bytes,
    public_key: bytes,
    app_id: str,
    verify_at: datetime,
    roots: list[x509.Certificate] | None,
) -> dict[str, object]:
    if not receipt:
        return {"receipt_valid": None}
    try:
        verify_receipt(
            receipt, now=verify_at, app_id=app_id, public_key=public_key, trust_roots=roots
        )
    except AppleVerificationError as exc:
        if roots is not None:
            # Test CAs replace the App Attest root; the receipt may still be under Apple's G3.
            try:
                verify_receipt(receipt, now=verify_at, app_id=app_id, public_key=public_key)
            except AppleVerificationError:
                pass
            else:
                return {"receipt_valid": True}
        return {
            "receipt_valid": False,
            "receipt_reason": exc.reason,
            "receipt_message": exc.message,
        }
    return {"receipt_valid": True}


def json_safe(value: object) -> object:
    """CBOR values as JSON: byte strings become standard base64."""
    if isinstance(value, bytes):
        return b64_encode(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
