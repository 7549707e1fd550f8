"""Request binding values for Play Integrity, following Google's classic-request nonce rules.

A nonce is URL-safe base64 without wrapping, 16–500 characters. Content binding is the SHA-256 of
a stable serialization of the request; a unique value has at least 128 bits from ``secrets``.
Combine both (a unique value inside the hashed request) for tamper and replay protection.
Standard requests bind with ``request_hash`` (at most 500 characters, returned as sent).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping

from appintegrity.encoding import b64url_encode

__all__ = ["content_binding", "request_hash", "unique_nonce", "validate_nonce"]

_NONCE = re.compile(r"\A[A-Za-z0-9_-]{16,500}={0,2}\Z")
MIN_UNIQUE_BITS = 128


def request_hash(payload: bytes | str) -> str:
    """A ``requestHash`` for a standard request: base64url (no padding) of SHA-256(payload)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return b64url_encode(hashlib.sha256(data).digest())


def content_binding(request: Mapping[str, object]) -> str:
    """The nonce for a request's content: SHA-256 of sorted-key compact JSON, base64url.

    The serialization is stable (same mapping, same bytes on any machine): keys sorted, no
    spaces, UTF-8, no NaN. The app must serialize the same way.
    """
    serialized = json.dumps(
        request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return request_hash(serialized)


def unique_nonce(bits: int = 256) -> str:
    """An unpredictable one-time value (server side), base64url without padding."""
    if bits < MIN_UNIQUE_BITS or bits % 8:
        raise ValueError(f"a nonce needs at least {MIN_UNIQUE_BITS} bits, in whole bytes")
    return b64url_encode(secrets.token_bytes(bits // 8))


def validate_nonce(value: str) -> str:
    """Return ``value`` if Play accepts it as a nonce, else raise ``ValueError`` saying why."""
    if not isinstance(value, str):
        raise ValueError("a nonce must be a string")
    if not 16 <= len(value) <= 500:
        raise ValueError(f"a nonce must be 16–500 characters, found {len(value)}")
    if not _NONCE.match(value):
        raise ValueError("a nonce must be URL-safe base64 without wrapping")
    return value
