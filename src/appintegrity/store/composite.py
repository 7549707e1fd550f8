"""PostgreSQL for durable records, Redis for hot, short-lived state.

Keys, counters, receipts, signing keys and debug tokens go to PostgreSQL (durable, atomic
single statements); challenges, consumed token ids and rate-limit windows go to Redis (fast,
expiring by TTL). Each operation touches exactly one backend, so each keeps the atomicity its
backend promises. If either backend is down, operations on it raise ``StoreUnavailableError``.

Consumed token ids live in Redis: a Redis crash without persistence forgets them, which would let
a limited-use token that has not yet expired be used again. Run Redis with AOF if that matters.
"""

from __future__ import annotations

from datetime import datetime

from appintegrity.store.base import (
    ChallengeRecord,
    ConsumedChallenge,
    DebugTokenRecord,
    DeviceKey,
    RateLimitResult,
    SigningKeyRecord,
)
from appintegrity.store.postgres import PostgresStore
from appintegrity.store.redis import RedisStore

__all__ = ["CompositeStore"]


class CompositeStore:
    """``Store`` splitting records between PostgreSQL (``durable``) and Redis (``cache``)."""

    def __init__(self, durable: PostgresStore, cache: RedisStore) -> None:
        self.durable = durable
        self.cache = cache

    def __repr__(self) -> str:
        return f"CompositeStore({self.durable!r}, {self.cache!r})"

    async def migrate(self) -> None:
        await self.durable.migrate()
        await self.cache.migrate()

    async def close(self) -> None:
        try:
            await self.cache.close()
        finally:
            await self.durable.close()

    async def ping(self) -> None:
        await self.durable.ping()
        await self.cache.ping()

    # Hot state: Redis --------------------------------------------------------------------

    async def add_challenge(self, record: ChallengeRecord) -> None:
        await self.cache.add_challenge(record)

    async def consume_challenge(self, value: str, now: datetime) -> ConsumedChallenge:
        return await self.cache.consume_challenge(value, now)

    async def consume_token_id(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        return await self.cache.consume_token_id(jti, expires_at, now)

    async def hit_rate_limit(
        self, bucket: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitResult:
        return await self.cache.hit_rate_limit(bucket, limit, window_seconds, now)

    # Durable records: PostgreSQL ---------------------------------------------------------

    async def add_key(self, key: DeviceKey) -> bool:
        return await self.durable.add_key(key)

    async def get_key(self, key_id: str) -> DeviceKey | None:
        return await self.durable.get_key(key_id)

    async def advance_counter(self, key_id: str, counter: int, now: datetime) -> bool:
        return await self.durable.advance_counter(key_id, counter, now)

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        return await self.durable.revoke_key(key_id, now)

    async def list_keys(self, app_id: str | None = None, limit: int = 1000) -> list[DeviceKey]:
        return await self.durable.list_keys(app_id, limit)

    async def update_receipt(
        self,
        key_id: str,
        receipt: bytes,
        risk_metric: int | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        return await self.durable.update_receipt(key_id, receipt, risk_metric, now=now)

    async def mark_receipt_checked(self, key_id: str, receipt: bytes, now: datetime) -> bool:
        return await self.durable.mark_receipt_checked(key_id, receipt, now)

    async def keys_due_for_receipt_refresh(
        self, app_id: str, before: datetime, limit: int
    ) -> list[DeviceKey]:
        return await self.durable.keys_due_for_receipt_refresh(app_id, before, limit)

    async def add_signing_key(self, record: SigningKeyRecord) -> None:
        await self.durable.add_signing_key(record)

    async def retire_signing_key(self, kid: str, now: datetime) -> bool:
        return await self.durable.retire_signing_key(kid, now)

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        return await self.durable.list_signing_keys()

    async def delete_signing_key(self, kid: str) -> bool:
        return await self.durable.delete_signing_key(kid)

    async def add_debug_token(self, record: DebugTokenRecord) -> None:
        await self.durable.add_debug_token(record)

    async def find_debug_token(self, secret_hash: bytes) -> DebugTokenRecord | None:
        return await self.durable.find_debug_token(secret_hash)

    async def list_debug_tokens(self, app_id: str | None = None) -> list[DebugTokenRecord]:
        return await self.durable.list_debug_tokens(app_id)

    async def revoke_debug_token(self, token_id: str, now: datetime) -> bool:
        return await self.durable.revoke_debug_token(token_id, now)

    # Housekeeping ------------------------------------------------------------------------

    async def purge_expired(self, now: datetime) -> int:
        """PostgreSQL holds no expiring rows here, and Redis expires its own; counted anyway."""
        return await self.durable.purge_expired(now) + await self.cache.purge_expired(now)
