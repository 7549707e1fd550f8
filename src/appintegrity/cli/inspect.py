"""``appintegrity inspect [BLOB|FILE|-]``: explain an App Attest object to a person (or ``--json``).

Accepts an attestation object or an assertion (base64 text, or raw CBOR in a file), a receipt,
or a vector file holding one of them. Nothing is *verified* against a challenge or a stored key
here; the certificate chain is checked against Apple's root, for information, at ``--at`` (by
default a vector file's ``verify_at``, else now). A Play Integrity token (a compact JWE: five
dot-separated parts), or a ``play-integrity`` vector file, is decrypted and shown by
``appintegrity.cli.inspect_play_integrity`` with the keys given (a vector's own by default).
Input that cannot be explained exits 1: with ``--json`` the failure is
``{"error": "<message>", "reason": "<code>" or null}`` on stdout, whatever the platform.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appintegrity.apple.assertion import parse_assertion
from appintegrity.apple.attestation import (
    NONCE_EXTENSION_OID,
    Environment,
    credential_nonce,
    parse_attestation_object,
)
from appintegrity.apple.authdata import (
    FLAG_ATTESTED_CREDENTIAL_DATA,
    FLAG_EXTENSION_DATA,
    FLAG_USER_PRESENT,
    FLAG_USER_VERIFIED,
    AuthenticatorData,
    decode_cbor,
    object_bytes,
)
from appintegrity.apple.certificates import ChainVerifier, apple_app_attestation_root
from appintegrity.apple.keys import public_key_point
from appintegrity.apple.receipt import parse_receipt
from appintegrity.cli.inspect_play_integrity import explain as explain_play_integrity
from appintegrity.cli.inspect_play_integrity import failure
from appintegrity.errors import AppIntegrityError

_JWE = re.compile(r"\A[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*){4}\Z")

_FLAG_NAMES = [
    (FLAG_USER_PRESENT, "UP (user present)"),
    (FLAG_USER_VERIFIED, "UV (user verified)"),
    (FLAG_ATTESTED_CREDENTIAL_DATA, "AT (attested credential data)"),
    (FLAG_EXTENSION_DATA, "ED (extension data)"),
]


class InspectError(Exception):
    """The input cannot be explained; the message says why (exit status 1), and ``reason`` is
    the stable code of the underlying error when there is one."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="explain an App Attest attestation, assertion or receipt (or a Play Integrity token)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source",
        nargs="?",
        default="-",
        metavar="BLOB|FILE|-",
        help="base64 text, a file (raw or base64, or a vector file), or - for stdin (default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument(
        "--at",
        type=_instant,
        help="ISO 8601 time at which to check the certificate chain (default: a vector file's"
        " verify_at, else now)",
    )
    parser.add_argument(
        "--decryption-key", help="Play Integrity: the Play Console response decryption key"
    )
    parser.add_argument(
        "--verification-key", help="Play Integrity: the Play Console response verification key"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except InspectError as exc:
        # The same shape as a Play Integrity failure: with --json on stdout, else on stderr.
        if args.json:
            print(failure(exc.reason, str(exc), as_json=True))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    data = _read_source(args.source)
    text = _as_text(data)
    if text is not None and _JWE.match(text):
        return _play_integrity(text, args)
    vector = _play_integrity_vector(text)
    if vector is not None:
        args.decryption_key = args.decryption_key or _vector_key(vector, "decryption_key")
        args.verification_key = args.verification_key or _vector_key(vector, "verification_key")
        return _play_integrity(str(vector["token"]), args)
    document = explain(data, now=args.at or _vector_time(text) or datetime.now(UTC))
    print(json.dumps(document, indent=2) if args.json else render(document))
    return 0


def _read_source(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False  # not a path at all: a pasted blob too long or odd to be a file name
    if not is_file:
        return source.encode("utf-8")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InspectError(f"cannot read {source}: {exc}") from exc


def _as_text(data: bytes) -> str | None:
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _vector(text: str | None) -> dict[str, object] | None:
    """The document, when ``text`` is a vector file (a JSON object with an ``input``)."""
    if text is None or not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if isinstance(document, dict) and isinstance(document.get("input"), dict):
        return document
    return None


def _vector_time(text: str | None) -> datetime | None:
    """A vector file's ``verify_at``: its objects are meant to be judged at that time."""
    document = _vector(text)
    verify_at = document.get("verify_at") if document else None
    if not isinstance(verify_at, str):
        return None
    try:
        return _instant(verify_at)
    except argparse.ArgumentTypeError:
        return None


def _play_integrity_vector(text: str | None) -> dict[str, object] | None:
    """A ``play-integrity`` vector's input (token and keys), to decrypt and show its verdict."""
    document = _vector(text)
    inputs = document.get("input") if document else None
    if isinstance(inputs, dict) and isinstance(inputs.get("token"), str):
        return inputs
    return None


def _vector_key(inputs: dict[str, object], name: str) -> str | None:
    """A Play Console key from a vector's input: base64 text, or absent."""
    value = inputs.get(name)
    if value is not None and not isinstance(value, str):
        raise InspectError(f"the vector's input.{name} must be a base64 string")
    return value


def _play_integrity(token: str, args: argparse.Namespace) -> int:
    status, output = explain_play_integrity(
        token,
        decryption_key=args.decryption_key,
        verification_key=args.verification_key,
        as_json=args.json,
    )
    print(output, file=sys.stdout if status == 0 or args.json else sys.stderr)
    return int(status)


def explain(data: bytes, *, now: datetime) -> dict[str, object]:
    """Describe ``data`` (attestation, assertion, receipt or vector file) as a JSON-able dict."""
    text = _as_text(data)
    if text is not None and text.startswith("{"):
        return _explain_vector(text, now)
    if data[:1] == b"\x30":
        # A raw DER receipt (a SEQUENCE): binary, so it is not base64 text, and no App Attest
        # object in base64 starts with "0" (receipts start "MI", CBOR maps "o").
        return _explain_receipt(data)
    try:
        raw = object_bytes(data, "input")
    except AppIntegrityError as exc:
        raise InspectError(
            "not base64 and not CBOR: nothing App Attest can read", exc.code
        ) from exc
    if raw[:1] == b"\x30":
        return _explain_receipt(raw)
    try:
        value = decode_cbor(raw, "input")
    except AppIntegrityError as exc:
        raise InspectError(f"not an App Attest object: {exc.message}", exc.code) from exc
    if isinstance(value, dict) and "fmt" in value:
        return _explain_attestation(raw, now)
    if isinstance(value, dict) and "authenticatorData" in value:
        return _explain_assertion(raw)
    raise InspectError("CBOR, but neither an attestation object nor an assertion")


def _explain_vector(text: str, now: datetime) -> dict[str, object]:
    try:
        vector = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InspectError(f"looks like JSON but is not: {exc}") from exc
    except RecursionError:
        raise InspectError("looks like JSON but is nested too deeply to read") from None
    inputs = vector.get("input") if isinstance(vector, dict) else None
    if not isinstance(inputs, dict):
        raise InspectError("a JSON document without a vector 'input'")
    for field in ("attestation", "assertion", "receipt"):
        if isinstance(inputs.get(field), str):
            return explain(inputs[field].encode("ascii", "replace"), now=now)
    raise InspectError("the vector holds no attestation, assertion or receipt")


def _explain_attestation(raw: bytes, now: datetime) -> dict[str, object]:
    try:
        parsed = parse_attestation_object(raw)
    except AppIntegrityError as exc:
        raise InspectError(f"attestation object: {exc.message} ({exc.code})", exc.code) from exc
    certificates: list[dict[str, object]] = []
    leaf: x509.Certificate | None = None
    for index, der in enumerate(parsed.x5c):
        try:
            certificate = x509.load_der_x509_certificate(der)
            certificates.append(_describe_certificate(certificate, index))
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            raise InspectError(f"x5c[{index}] is not a usable DER certificate: {exc}") from exc
        if index == 0:
            leaf = certificate
    assert leaf is not None
    auth = _describe_auth_data(parsed.auth_data)
    key_id: bytes | None = None
    public_key = leaf.public_key()  # loaded once already by _describe_certificate
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key_id = hashlib.sha256(public_key_point(public_key)).digest()
        auth["key_id"] = _b64(key_id)
        assert parsed.auth_data.credential_id is not None
        auth["credential_id_is_key_id"] = parsed.auth_data.credential_id == key_id
    return {
        "kind": "apple-attestation",
        "format": parsed.fmt,
        "certificates": certificates,
        "chain": _chain_check(parsed.x5c, now),
        "authenticator_data": auth,
        "receipt": _receipt_summary(parsed.receipt),
        "note": "not verified against a challenge: use `appintegrity verify` or the API for that",
    }


def _explain_assertion(raw: bytes) -> dict[str, object]:
    try:
        parsed = parse_assertion(raw)
    except AppIntegrityError as exc:
        raise InspectError(f"assertion: {exc.message} ({exc.code})", exc.code) from exc
    return {
        "kind": "apple-assertion",
        "signature": {"der_hex": parsed.signature.hex(), "length": len(parsed.signature)},
        "authenticator_data": _describe_auth_data(parsed.auth_data),
        "note": "the signature covers SHA-256(authenticatorData ‖ SHA-256(clientData)); "
        "verify it with the key stored at attestation",
    }


def _describe_auth_data(auth: AuthenticatorData) -> dict[str, object]:
    described: dict[str, object] = {
        "length": len(auth.raw),
        "rp_id_hash": auth.rp_id_hash.hex(),
        "flags": {
            "value": f"0x{auth.flags:02x}",
            "set": [name for bit, name in _FLAG_NAMES if auth.flags & bit],
        },
        "counter": auth.counter,
    }
    if auth.aaguid is not None:
        environment = Environment.from_aaguid(auth.aaguid)
        described["aaguid"] = {
            "hex": auth.aaguid.hex(),
            "text": auth.aaguid.decode("ascii", "replace").replace("\x00", "\\0"),
            "environment": environment.value if environment else "unknown",
        }
    if auth.credential_id is not None:
        described["credential_id"] = _b64(auth.credential_id)
    if auth.extensions is not None:
        described["extensions"] = _json_safe(dict(auth.extensions))
    return described


def _describe_certificate(certificate: x509.Certificate, index: int) -> dict[str, object]:
    role = "credential certificate" if index == 0 else f"intermediate CA (x5c[{index}])"
    public_key = certificate.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        key = f"EC {public_key.curve.name}"
    elif isinstance(public_key, rsa.RSAPublicKey):
        key = f"RSA {public_key.key_size}"
    else:
        key = type(public_key).__name__
    described: dict[str, object] = {
        "role": role,
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "public_key": key,
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
    }
    if index == 0:
        try:
            nonce = credential_nonce(certificate)
        except AppIntegrityError as exc:
            described["nonce"] = f"undecodable: {exc.message}"
        else:
            described["nonce"] = nonce.hex() if nonce is not None else None
        described["nonce_extension"] = NONCE_EXTENSION_OID.dotted_string
    return described


def _chain_check(x5c: tuple[bytes, ...], now: datetime) -> dict[str, object]:
    try:
        ChainVerifier([apple_app_attestation_root()]).verify(x5c, now)
    except AppIntegrityError as exc:
        return {"trusted": False, "at": now.isoformat(), "reason": exc.code, "message": exc.message}
    return {"trusted": True, "at": now.isoformat(), "root": "Apple App Attestation Root CA"}


def _receipt_summary(receipt: bytes) -> dict[str, object]:
    summary: dict[str, object] = {"size": len(receipt)}
    if not receipt:
        return summary
    try:
        parsed = parse_receipt(receipt)
    except AppIntegrityError as exc:
        summary["error"] = f"{exc.message} ({exc.code})"
        return summary
    summary["fields"] = _receipt_fields(parsed)
    return summary


def _explain_receipt(raw: bytes) -> dict[str, object]:
    try:
        parsed = parse_receipt(raw)
    except AppIntegrityError as exc:
        raise InspectError(f"receipt: {exc.message} ({exc.code})", exc.code) from exc
    return {
        "kind": "apple-receipt",
        "size": len(raw),
        "fields": _receipt_fields(parsed),
        "note": "not verified: use `appintegrity verify` or the API to check its signature",
    }


def _receipt_fields(receipt: object) -> object:
    if not dataclasses.is_dataclass(receipt) or isinstance(receipt, type):
        return _json_safe(receipt)
    fields: dict[str, object] = {}
    for field in dataclasses.fields(receipt):
        value = getattr(receipt, field.name)
        if field.name == "raw":
            continue
        if field.name == "signer_chain" and isinstance(value, tuple):
            fields[field.name] = [_subject(der) for der in value]
            continue
        if field.name == "attested_certificate" and isinstance(value, bytes):
            fields[field.name] = _subject(value)
            continue
        fields[field.name] = _json_safe(value)
    return fields


def _subject(der: object) -> str:
    if not isinstance(der, bytes):
        return str(der)
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except (ValueError, x509.InvalidVersion):
        return f"<{len(der)} bytes, undecodable>"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_safe(value: object) -> object:
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def render(document: Mapping[str, object], indent: int = 0) -> str:
    """The explanation as indented ``key: value`` lines for a person."""
    lines: list[str] = []
    pad = "  " * indent
    for key, value in document.items():
        label = key.replace("_", " ")
        if isinstance(value, Mapping):
            lines.append(f"{pad}{label}:")
            lines.append(render(value, indent + 1))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{label}:")
            for item in value:
                assert isinstance(item, Mapping)
                lines.append(f"{pad}  -")
                lines.append(render(item, indent + 2))
        elif isinstance(value, list):
            lines.append(f"{pad}{label}: {', '.join(map(str, value)) or '(none)'}")
        else:
            lines.append(f"{pad}{label}: {'(none)' if value is None else value}")
    return "\n".join(line for line in lines if line)


__all__ = ["explain", "register", "render", "run"]
