"""Authenticator data (WebAuthn §6.1) as App Attest uses it, and strict CBOR decoding.

Layout: rpIdHash (32) ‖ flags (1) ‖ signCount (4, big-endian) ‖ [attested credential data:
aaguid (16) ‖ credentialIdLength (2) ‖ credentialId ‖ credentialPublicKey (COSE, CBOR)]
‖ [extensions (CBOR map)].

iOS 27 appends a CBOR map (``apple_bundle_version_01``, ``apple_validation_category_01``) after
the credential public key (attestations) or the counter (assertions) *without* setting the
extension-data flag; refusing trailing bytes, or waiting for that flag, refuses genuine devices.
So any bytes left after the fixed part must be exactly one CBOR map, exposed as ``extensions``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import cbor2

from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import AppleVerificationError, Reason

FLAG_USER_PRESENT = 0x01
FLAG_USER_VERIFIED = 0x04
FLAG_ATTESTED_CREDENTIAL_DATA = 0x40
FLAG_EXTENSION_DATA = 0x80

_FIXED_LENGTH = 37  # rpIdHash ‖ flags ‖ signCount
_AAGUID_LENGTH = 16

# Errors cbor2 may raise on hostile input. CBORError covers its own decoding errors; the
# others are what Python raises for absurd sizes, unhashable keys or nesting.
CBOR_ERRORS = (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError)


def malformed(message: str) -> AppleVerificationError:
    """The typed error for anything that cannot be decoded."""
    return AppleVerificationError(Reason.APPLE_MALFORMED, message)


def decode_cbor(data: bytes, what: str) -> object:
    """Decode exactly one CBOR item that must span all of ``data``.

    Duplicate map keys are refused: two ``fmt`` or ``authData`` entries would let two parsers
    disagree about what was attested.
    """
    stream = io.BytesIO(data)
    value, end = _decode_one(stream, what)
    if end != len(data):
        raise malformed(f"{what}: {len(data) - end} unexpected bytes after the CBOR item")
    return value


def _decode_one(stream: io.BytesIO, what: str) -> tuple[object, int]:
    try:
        value = cbor2.CBORDecoder(stream, allow_duplicate_keys=False).decode()
    except CBOR_ERRORS as exc:
        raise malformed(f"{what} is not valid CBOR ({exc})") from exc
    return value, stream.tell()


@dataclass(frozen=True, slots=True)
class AuthenticatorData:
    """Parsed authenticator data; ``raw`` is kept because the nonce is computed over it."""

    raw: bytes
    rp_id_hash: bytes
    flags: int
    counter: int
    aaguid: bytes | None
    credential_id: bytes | None
    credential_public_key: bytes | None  # the COSE key, still CBOR-encoded
    extensions: Mapping[str, object] | None

    @property
    def has_attested_credential_data(self) -> bool:
        return bool(self.flags & FLAG_ATTESTED_CREDENTIAL_DATA)

    @classmethod
    def parse(cls, data: bytes, *, attested: bool) -> AuthenticatorData:
        """Parse ``data`` strictly; raises ``AppleVerificationError(apple.malformed)``.

        ``attested`` says whether attested credential data follows the counter (attestations)
        or not (assertions). Context decides, not the AT flag: Apple sets 0x40 in assertions
        too, with nothing after the counter.
        """
        if not isinstance(data, bytes):
            raise malformed(f"authenticator data must be bytes, found {type(data).__name__}")
        if len(data) < _FIXED_LENGTH:
            raise malformed(
                f"authenticator data is {len(data)} bytes, at least {_FIXED_LENGTH} expected"
            )
        flags = data[32]
        counter = int.from_bytes(data[33:37], "big")
        if len(data) == _FIXED_LENGTH and not attested and not flags & FLAG_EXTENSION_DATA:
            # The assertion fast path: nothing follows the counter.
            return cls(data, data[:32], flags, counter, None, None, None, None)

        offset = _FIXED_LENGTH
        aaguid = credential_id = credential_public_key = None
        stream = io.BytesIO(data)
        if attested:
            if len(data) < offset + _AAGUID_LENGTH + 2:
                raise malformed("authenticator data is too short for attested credential data")
            aaguid = data[offset : offset + _AAGUID_LENGTH]
            offset += _AAGUID_LENGTH
            id_length = int.from_bytes(data[offset : offset + 2], "big")
            offset += 2
            if len(data) < offset + id_length:
                raise malformed(
                    f"credential id length {id_length} runs past the end of authenticator data"
                )
            credential_id = data[offset : offset + id_length]
            offset += id_length
            if offset == len(data):
                raise malformed("authenticator data has no credential public key")
            stream.seek(offset)
            cose_key, end = _decode_one(stream, "credential public key")
            if not isinstance(cose_key, dict):
                raise malformed("credential public key is not a CBOR map (COSE_Key)")
            credential_public_key = data[offset:end]
            offset = end

        extensions: Mapping[str, object] | None = None
        if offset < len(data):
            stream.seek(offset)
            value, end = _decode_one(stream, "authenticator data extensions")
            if end != len(data):
                raise malformed(
                    f"{len(data) - end} unexpected bytes after the authenticator data extensions"
                )
            if not isinstance(value, dict):
                raise malformed("authenticator data extensions are not a CBOR map")
            extensions = _extension_map(value)
        elif flags & FLAG_EXTENSION_DATA:
            raise malformed("the extension-data flag is set but no extensions follow")
        return cls(
            data,
            data[:32],
            flags,
            counter,
            aaguid,
            credential_id,
            credential_public_key,
            extensions,
        )


def _extension_map(value: dict[object, object]) -> Mapping[str, object]:
    """The extension map keyed by text, as exposed; a key that has no text form, or two keys
    with one text form (``1`` and ``"1"``), make the map ambiguous and are refused."""
    named: dict[str, object] = {}
    for key, item in value.items():
        try:
            name = str(key)
        except (ValueError, RecursionError) as exc:  # e.g. an integer past Python's digit limit
            raise malformed("authenticator data extensions have a key with no text form") from exc
        if name in named:
            raise malformed(f"authenticator data extensions name {name[:64]!r} twice")
        named[name] = item
    return MappingProxyType(named)


def object_bytes(data: bytes | str, what: str) -> bytes:
    """An attestation or assertion as received: raw CBOR bytes, or base64/base64url text.

    Base64 passed as ``bytes`` (an HTTP body read raw) is accepted too: a CBOR map starts with
    a byte in 0xa0–0xbf, which no base64 alphabet contains, so the two cannot be confused.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if raw and 0xA0 <= raw[0] <= 0xBF:
            return raw
    elif isinstance(data, str):
        raw = data.encode("utf-8", "replace")
    else:
        raise malformed(f"{what} must be bytes or base64 text, found {type(data).__name__}")
    try:
        return b64decode_lenient(raw)
    except EncodingError as exc:
        raise malformed(f"{what} is neither CBOR nor base64 ({exc})") from exc


def app_id_hashes(app_ids: str | Sequence[str]) -> tuple[tuple[str, bytes], ...]:
    """Each accepted ``TEAMID.bundle.id`` with its RP ID hash (SHA-256 of the app id)."""
    names = [app_ids] if isinstance(app_ids, str) else list(app_ids)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError("app_ids must be one or more non-empty 'TEAMID.bundle.id' strings")
    return tuple((name, hashlib.sha256(name.encode("utf-8")).digest()) for name in names)


def match_app_id(rp_id_hash: bytes, candidates: tuple[tuple[str, bytes], ...]) -> str | None:
    """The app id whose hash equals ``rp_id_hash``; every candidate is compared in constant time."""
    found: str | None = None
    for name, digest in candidates:
        if hmac.compare_digest(rp_id_hash, digest) and found is None:
            found = name
    return found
