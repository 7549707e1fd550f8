"""Play Integrity tokens read locally: compact JWE (A256KW / A256GCM) around compact JWS (ES256).

Google's "decrypt and verify locally" steps, with the Play Console keys. Only the algorithms Play
uses are accepted; any other ``alg``, ``enc``, ``zip`` or ``crit`` is refused before a key is
touched, which rules out algorithm-confusion tricks (``none``, ``HS256`` keyed with a public key).

The JOSE steps are done directly on ``cryptography`` primitives: they are few and fixed, and the
JOSE libraries' generic machinery (header registries, per-character base64 validation) costs more
than the ES256 verification itself (joserfc reached 57 % and PyJWT 68 % of the raw verify rate;
this path 75-78 % in ``make bench``). The test kit builds tokens with joserfc, so every test is
also an interoperability check against an independent implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from appintegrity.encoding import (
    EncodingError,
    b64decode_lenient,
    b64url_decode_strict,
    json_document,
)
from appintegrity.errors import ConfigError, GoogleVerificationError, Reason

__all__ = ["MAX_TOKEN_LENGTH", "PlayIntegrityKeys", "decode_token_locally", "read_jwe_header"]

# Real tokens are a few kilobytes; anything far larger is refused before any work is done.
MAX_TOKEN_LENGTH = 64 * 1024

_ES256 = ec.ECDSA(hashes.SHA256())
_JWE_ALG = "A256KW"
_JWE_ENC = "A256GCM"
_JWS_ALG = "ES256"


@dataclass(frozen=True)
class PlayIntegrityKeys:
    """The two Play Console response keys of one app (self-managed response encryption)."""

    decryption_key: bytes
    verification_key: ec.EllipticCurvePublicKey

    def __post_init__(self) -> None:
        if not isinstance(self.decryption_key, bytes) or len(self.decryption_key) != 32:
            raise ConfigError("the Play Integrity decryption key must be 32 bytes (AES-256)")
        if not isinstance(self.verification_key, ec.EllipticCurvePublicKey) or not isinstance(
            self.verification_key.curve, ec.SECP256R1
        ):
            raise ConfigError("the Play Integrity verification key must be an EC P-256 public key")

    @classmethod
    def from_base64(cls, decryption_key: str, verification_key: str) -> PlayIntegrityKeys:
        """Read the keys as the Play Console shows them.

        ``decryption_key``: base64 of the raw AES-256 key. ``verification_key``: base64 of the
        DER SubjectPublicKeyInfo (a PEM block is accepted too). Raises ``ConfigError``.
        """
        try:
            aes_key = b64decode_lenient(decryption_key)
        except EncodingError as exc:
            raise ConfigError(f"the Play Integrity decryption key is not base64: {exc}") from exc
        try:
            if verification_key.lstrip().startswith("-----BEGIN"):
                public_key = load_pem_public_key(verification_key.encode("ascii"))
            else:
                public_key = load_der_public_key(b64decode_lenient(verification_key))
        except (EncodingError, ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
            raise ConfigError(
                "the Play Integrity verification key is not a base64 DER public key"
            ) from exc
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ConfigError("the Play Integrity verification key must be an EC P-256 public key")
        return cls(decryption_key=aes_key, verification_key=public_key)


def _fail(reason: Reason, message: str) -> GoogleVerificationError:
    return GoogleVerificationError(reason, message)


def _unb64(segment: bytes, what: str) -> bytes:
    """Strict JOSE base64url of ASCII bytes: URL-safe alphabet, no padding, no whitespace."""
    try:
        return b64url_decode_strict(segment)
    except EncodingError as exc:
        raise _fail(Reason.GOOGLE_MALFORMED, f"the {what} is not base64url") from exc


def _json_object(data: bytes, what: str) -> dict[str, object]:
    try:
        value = json_document(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _fail(Reason.GOOGLE_MALFORMED, f"the {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise _fail(Reason.GOOGLE_MALFORMED, f"the {what} is not a JSON object")
    return value


def _split(token: bytes, parts: int, what: str) -> list[bytes]:
    segments = token.split(b".")
    if len(segments) != parts:
        raise _fail(
            Reason.GOOGLE_MALFORMED,
            f"the {what} has {len(segments)} dot-separated parts, expected {parts}",
        )
    return segments


def _token_bytes(token: str) -> bytes:
    if not isinstance(token, str):
        raise _fail(Reason.GOOGLE_MALFORMED, "the integrity token must be text")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _fail(
            Reason.GOOGLE_MALFORMED, f"the integrity token is longer than {MAX_TOKEN_LENGTH}"
        )
    try:
        return token.strip().encode("ascii")
    except UnicodeEncodeError as exc:
        raise _fail(Reason.GOOGLE_MALFORMED, "the integrity token is not ASCII") from exc


def read_jwe_header(token: str) -> dict[str, object]:
    """The JWE protected header of a token, unverified (for ``inspect`` without keys)."""
    segments = _split(_token_bytes(token), 5, "integrity token (compact JWE)")
    return _json_object(_unb64(segments[0], "JWE header"), "JWE header")


def _check_header(
    header: Mapping[str, object], expected: Mapping[str, str], reason: Reason
) -> None:
    for name, value in expected.items():
        found = header.get(name)
        if found != value:
            raise _fail(reason, f"{name} must be {value!r}, found {found!r}")
    # RFC 7515/7516: refuse a `crit` we do not understand (we understand none);
    # Play never compresses, and refusing `zip` keeps decompression bombs out.
    for name in ("crit", "zip"):
        if name in header:
            raise _fail(reason, f"unsupported header parameter {name!r}")


# Play uses a handful of distinct header spellings: once one has been parsed and accepted, its
# encoded form is remembered, so later tokens skip the base64 and JSON work. Only accepted headers
# are kept, and only a few, so the cache can neither grow nor change a decision. Each is kept
# for the layer that accepted it: a JWS header (alg ES256) is no JWE header, nor the reverse.
_ACCEPTED_HEADERS: dict[tuple[str, bytes], bool] = {}
_MAX_ACCEPTED_HEADERS = 32


def _accept_header(
    header_b64: bytes, what: str, expected: Mapping[str, str], reason: Reason
) -> None:
    cache_key = (what, header_b64)
    if cache_key in _ACCEPTED_HEADERS:
        return
    _check_header(_json_object(_unb64(header_b64, what), what), expected, reason)
    if len(_ACCEPTED_HEADERS) < _MAX_ACCEPTED_HEADERS:
        _ACCEPTED_HEADERS[cache_key] = True


def decode_token_locally(token: str, keys: PlayIntegrityKeys) -> dict[str, object]:
    """Decrypt and verify a Play Integrity token; return its payload (the verdict JSON object).

    Raises ``GoogleVerificationError`` with ``google.malformed`` (not a compact JWE of a compact
    JWS of a JSON object), ``google.decryption_failed`` (another ``alg``/``enc``, or the AES key
    unwrap or GCM tag fails) or ``google.signature_invalid`` (another ``alg``, or ES256 fails).
    """
    # Everything below works on ASCII bytes: one encode here instead of one per segment.
    header_b64, key_b64, iv_b64, ciphertext_b64, tag_b64 = _split(
        _token_bytes(token), 5, "integrity token (compact JWE)"
    )
    # Google step 1: decrypt the JWE (RFC 7516 §5.2) with the response decryption key.
    _accept_header(
        header_b64,
        "JWE header",
        {"alg": _JWE_ALG, "enc": _JWE_ENC},
        Reason.GOOGLE_DECRYPTION_FAILED,
    )
    wrapped_key = _unb64(key_b64, "JWE encrypted key")
    iv = _unb64(iv_b64, "JWE initialization vector")
    ciphertext = _unb64(ciphertext_b64, "JWE ciphertext")
    tag = _unb64(tag_b64, "JWE authentication tag")
    if len(wrapped_key) != 40 or len(iv) != 12 or len(tag) != 16:
        raise _fail(
            Reason.GOOGLE_DECRYPTION_FAILED,
            "A256KW / A256GCM need a 40-byte wrapped key, a 12-byte IV and a 16-byte tag",
        )
    try:
        content_key = aes_key_unwrap(keys.decryption_key, wrapped_key)
        plaintext = AESGCM(content_key).decrypt(iv, ciphertext + tag, header_b64)
    except (InvalidUnwrap, InvalidTag) as exc:
        raise _fail(
            Reason.GOOGLE_DECRYPTION_FAILED, "the token does not decrypt with the decryption key"
        ) from exc

    # Google step 2: verify the nested JWS (RFC 7515 §5.2) with the response verification key.
    # Its segments are checked as base64url below; bytes outside that alphabet fail there.
    jws_header_b64, payload_b64, signature_b64 = _split(
        plaintext, 3, "decrypted content (compact JWS)"
    )
    _accept_header(jws_header_b64, "JWS header", {"alg": _JWS_ALG}, Reason.GOOGLE_SIGNATURE_INVALID)
    signature = _unb64(signature_b64, "JWS signature")
    if len(signature) != 64:
        raise _fail(
            Reason.GOOGLE_SIGNATURE_INVALID,
            f"an ES256 signature is 64 bytes, found {len(signature)}",
        )
    der_signature = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    signing_input = plaintext[: len(jws_header_b64) + 1 + len(payload_b64)]
    try:
        keys.verification_key.verify(der_signature, signing_input, _ES256)
    except InvalidSignature as exc:
        raise _fail(
            Reason.GOOGLE_SIGNATURE_INVALID,
            "the token's signature does not verify with the verification key",
        ) from exc
    return _json_object(_unb64(payload_b64, "JWS payload"), "verdict payload")
