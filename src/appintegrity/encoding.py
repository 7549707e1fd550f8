"""Base64 as real apps send it: standard or URL-safe alphabet, with or without padding.

Device APIs return standard base64, some clients re-encode as base64url or hex;
these helpers normalise all of them so that two spellings of one value compare equal.
JOSE's strict base64url and its compact JSON (app tokens, Play Integrity tokens) are here too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import pybase64

_B64_CHARS = re.compile(rb"\A[A-Za-z0-9+/_-]*={0,2}\Z")
_HEX_CHARS = re.compile(r"\A[0-9a-fA-F]+\Z")


class EncodingError(ValueError):
    """Raised when text is not base64 (or hex) in any accepted spelling."""


def b64decode_lenient(data: str | bytes) -> bytes:
    """Decode standard or URL-safe base64, padded or not; whitespace is ignored.

    Raises ``EncodingError`` for anything else, including characters of neither
    alphabet and impossible lengths.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError as exc:
            raise EncodingError("base64 text contains non-ASCII characters") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise EncodingError(f"expected base64 text, found {type(data).__name__}")
    raw = b"".join(raw.split())
    if not _B64_CHARS.match(raw):
        raise EncodingError("not base64: unexpected characters")
    raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1:
        raise EncodingError("not base64: impossible length")
    raw = raw.replace(b"-", b"+").replace(b"_", b"/")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError(f"not base64: {exc}") from exc


_JOSE_PADDING = (b"", b"", b"==", b"=")
# base64url -> standard alphabet; the standard alphabet's own "+", "/" and "=" (not JOSE)
# become "!", which binascii's strict mode refuses along with anything else outside it.
_FROM_B64URL = bytes.maketrans(b"-_+/=", b"+/!!!")
# Below this length binascii is faster (pybase64's call costs about 0.7 µs); above it,
# pybase64's vectorised decoder wins, by 3x on a kilobyte.
_PYBASE64_FROM = 320


def b64url_decode_strict(segment: bytes) -> bytes:
    """JOSE base64url (RFC 7515 §2): URL-safe alphabet only, no padding, no whitespace.

    On the hot paths (every Play Integrity token, every first-seen app token), hence the
    two decoders, each used where it is faster. Raises ``EncodingError``.
    """
    size = len(segment)
    try:
        if size % 4 == 1:
            raise EncodingError("not base64url: impossible length")
        if size < _PYBASE64_FROM:
            data = segment.translate(_FROM_B64URL) + _JOSE_PADDING[size % 4]
            return binascii.a2b_base64(data, strict_mode=True)
        # pybase64 with altchars would also take "+" and "/"; JOSE allows neither, nor "=".
        if b"=" in segment or b"+" in segment or b"/" in segment:
            raise EncodingError("not base64url: padding or standard-alphabet characters")
        return pybase64.b64decode(segment + _JOSE_PADDING[size % 4], b"-_", True)
    except binascii.Error as exc:
        raise EncodingError(f"not base64url: {exc}") from exc


_decode_json = json.JSONDecoder().raw_decode


def json_document(data: bytes) -> object:
    """``json.loads`` of UTF-8 bytes, faster for the compact JSON that JOSE signs (on the hot
    paths of app tokens and Play tokens): ``raw_decode`` without ``loads``' two whitespace
    scans, and ``loads`` itself whenever that is not the whole story. Raises what ``loads``
    raises: ``ValueError`` (bad JSON or UTF-8) or ``RecursionError`` (nesting)."""
    text = data.decode("utf-8")
    try:
        value, end = _decode_json(text)
    except ValueError:
        end = -1
    if end != len(text):
        value = json.loads(text)
    return value


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding (JOSE, challenges, nonces)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_encode(data: bytes) -> str:
    """Standard base64 with padding (what the iOS device APIs produce)."""
    return base64.b64encode(data).decode("ascii")


def normalize_key_id(key_id: str | bytes) -> bytes:
    """Return the 32 raw bytes of an App Attest key id, however it was spelled.

    Accepts the raw 32 bytes, standard or URL-safe base64 (padded or not) and
    64-character hex. Comparing normalised bytes avoids the bug of comparing two
    base64 alphabets as strings.
    """
    if isinstance(key_id, bytes | bytearray) and len(key_id) == 32:
        return bytes(key_id)
    if isinstance(key_id, bytes | bytearray):
        try:
            text = bytes(key_id).decode("ascii")
        except UnicodeDecodeError as exc:
            raise EncodingError("key id is neither 32 raw bytes nor text") from exc
    elif isinstance(key_id, str):
        text = key_id
    else:
        raise EncodingError(f"key id must be text or bytes, found {type(key_id).__name__}")
    text = text.strip()
    if len(text) == 64 and _HEX_CHARS.match(text):
        return bytes.fromhex(text)
    decoded = b64decode_lenient(text)
    if len(decoded) != 32:
        raise EncodingError(f"key id must decode to 32 bytes, found {len(decoded)}")
    return decoded
