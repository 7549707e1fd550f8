"""One-time challenges: issued at random, consumed atomically by the store, bound if asked.

A challenge is consumed *before* the attestation or assertion it protects is verified, so it
is single use even when that verification fails: an attacker gets one try per challenge.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from appintegrity.encoding import b64url_encode
from appintegrity.errors import Code, ServiceError
from appintegrity.service.errors import CHALLENGE_MISMATCH, service_error
from appintegrity.store.base import ChallengeOutcome, ChallengeRecord, Store

CHALLENGE_BYTES = 32  # 256 bits from the OS CSPRNG; the issue asks for at least 128
ANY_PURPOSE = "any"
# What this service issues is 43 base64url characters; anything outside the alphabet or far
# from that length was not issued here, and is refused before it reaches the store (a lone
# surrogate or a NUL is not even storable text).
_LOOKS_ISSUED = re.compile(r"[A-Za-z0-9_-]{16,128}")


def new_challenge_value() -> str:
    return b64url_encode(secrets.token_bytes(CHALLENGE_BYTES))


def challenge_in_payload(payload: str) -> str:
    """The challenge an assertion payload carries: the payload itself, or its JSON
    ``challenge`` member when the payload is a JSON object."""
    text = payload.strip()
    if not text.startswith("{"):
        return payload
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise service_error(
            Code.REQUEST_INVALID, "payload starts with '{' but is not a JSON object"
        ) from exc
    if not isinstance(document, dict):
        raise service_error(Code.REQUEST_INVALID, "payload is not a JSON object")
    challenge = document.get("challenge")
    if not isinstance(challenge, str) or not challenge:
        raise service_error(
            Code.REQUEST_INVALID, "payload JSON object has no string member 'challenge'"
        )
    return challenge


class Challenges:
    """Issue and consume challenges through the store."""

    def __init__(self, store: Store, ttl_seconds: int, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.ttl = timedelta(seconds=ttl_seconds)
        self.clock = clock

    async def issue(self, purpose: str | None, key_id: str | None) -> ChallengeRecord:
        now = self.clock()
        record = ChallengeRecord(
            value=new_challenge_value(),
            purpose=purpose or ANY_PURPOSE,
            key_id=key_id,
            created_at=now,
            expires_at=now + self.ttl,
        )
        await self.store.add_challenge(record)
        return record

    async def consume(self, value: str, *, purpose: str, key_id: str | None) -> ChallengeRecord:
        """Consume ``value`` for ``purpose`` (and ``key_id``), or raise the matching error.

        The challenge is used up even when the purpose or key binding then disagrees.
        """
        if _LOOKS_ISSUED.fullmatch(value) is None:
            raise service_error(Code.CHALLENGE_UNKNOWN, "this challenge was not issued here")
        result = await self.store.consume_challenge(value, self.clock())
        if result.outcome is ChallengeOutcome.UNKNOWN:
            raise service_error(Code.CHALLENGE_UNKNOWN, "this challenge was not issued here")
        if result.outcome is ChallengeOutcome.EXPIRED:
            raise service_error(Code.CHALLENGE_EXPIRED, "the challenge has expired")
        if result.outcome is ChallengeOutcome.CONSUMED:
            raise service_error(Code.CHALLENGE_CONSUMED, "the challenge was already used")
        record = result.record
        if record is None:  # pragma: no cover - a store contract violation
            raise ServiceError(Code.STORE_UNAVAILABLE, "store returned no challenge record", 503)
        if record.purpose not in (ANY_PURPOSE, purpose):
            raise service_error(
                CHALLENGE_MISMATCH,
                f"the challenge was issued for {record.purpose}, not {purpose}",
            )
        if record.key_id is not None and record.key_id != key_id:
            raise service_error(CHALLENGE_MISMATCH, "the challenge is bound to another key")
        return record
