"""The attested P-256 key in whatever form a backend stored it."""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_public_key,
)

from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import AppleVerificationError, Reason

_POINT_LENGTH = 65  # 0x04 ‖ X (32) ‖ Y (32)


def _malformed(message: str) -> AppleVerificationError:
    return AppleVerificationError(Reason.APPLE_MALFORMED, message)


def public_key_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed X9.62 point: what App Attest hashes into the key id."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def load_public_key(
    value: ec.EllipticCurvePublicKey | bytes | str,
) -> ec.EllipticCurvePublicKey:
    """Load an App Attest public key: PEM, DER SubjectPublicKeyInfo, the 65-byte uncompressed
    point, or base64 of either binary form. Anything else, or a key that is not on P-256,
    raises ``AppleVerificationError(apple.malformed)``.
    """
    if isinstance(value, ec.EllipticCurvePublicKey):
        key = value
    elif isinstance(value, bytes | bytearray | str):
        return _load_cached(bytes(value) if not isinstance(value, str) else value)
    else:
        raise _malformed(f"public key must be text, bytes or a key, found {type(value).__name__}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise _malformed(f"App Attest keys are P-256, found {key.curve.name}")
    return key


@lru_cache(maxsize=4096)
def _load_cached(value: bytes | str) -> ec.EllipticCurvePublicKey:
    """Keys are stored once and used for every assertion: decode each distinct value once."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-----BEGIN"):
            data = text.encode("ascii", "replace")
        else:
            try:
                data = b64decode_lenient(text)
            except EncodingError as exc:
                raise _malformed(f"public key is neither PEM nor base64 ({exc})") from exc
    else:
        data = value
    try:
        if data.startswith(b"-----BEGIN"):
            key = load_pem_public_key(data)
        elif len(data) == _POINT_LENGTH and data[0] == 0x04:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
        else:
            key = load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _malformed(f"public key could not be loaded ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _malformed(f"App Attest keys are EC P-256, found {type(key).__name__}")
    return load_public_key(key)
