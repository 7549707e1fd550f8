"""App-token signing keys: ES256 on P-256, named by their RFC 7638 JWK thumbprint."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from appintegrity.encoding import b64url_encode
from appintegrity.errors import ConfigError

ALGORITHM = "ES256"
_COORDINATE_BYTES = 32
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _coordinates(public_key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    numbers = public_key.public_numbers()
    return (
        b64url_encode(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        b64url_encode(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    )


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members, sorted, no whitespace."""
    x, y = _coordinates(public_key)
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
    )
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


class SigningKey:
    """A P-256 private key that signs app tokens, with the ``kid`` verifiers look it up by."""

    __slots__ = ("_public_jwk", "kid", "private_key")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigError(f"signing key must be on P-256, found {private_key.curve.name}")
        self.private_key = private_key
        self.kid = kid or jwk_thumbprint(private_key.public_key())
        x, y = _coordinates(private_key.public_key())
        self._public_jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None) -> SigningKey:
        """Load a PKCS#8 (or SEC1) PEM private key, as the store keeps it."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"signing key is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"signing key must be an EC key, found {type(key).__name__}")
        return cls(key, kid)

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, str]:
        return dict(self._public_jwk)

    def sign(self, signing_input: bytes) -> bytes:
        """JWS ES256 signature: R and S as two 32-byte big-endian integers (RFC 7518 §3.4)."""
        der = self.private_key.sign(signing_input, _ECDSA_SHA256)
        r, s = decode_dss_signature(der)
        return r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"
