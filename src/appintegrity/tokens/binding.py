"""Token binding (Approov's ``pay`` claim): tie an app token to a value of the request.

The app asks for a token bound to, say, its ``Authorization`` header; the token then
carries only a hash of that value, and the API recomputes the hash from the request
it receives. A token lifted from one session is useless with another's header.
"""

from __future__ import annotations

import hashlib
import hmac

from appintegrity.encoding import b64_encode


def binding_for(value: str | bytes) -> str:
    """Standard base64 (padded) of SHA-256 of ``value``: Approov's ``pay`` format.

    Bytes are hashed as given: pass a header's bytes exactly as they arrive, untrimmed (the web
    adapters do). Text is hashed as its UTF-8 encoding, which is what a client sending that
    text as UTF-8 put on the wire.
    """
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return b64_encode(hashlib.sha256(raw).digest())


def binding_matches(expected_binding: str, value: str | bytes) -> bool:
    """Constant-time check that ``value`` hashes to the token's ``pay`` claim."""
    return hmac.compare_digest(binding_for(value).encode("ascii"), expected_binding.encode())
