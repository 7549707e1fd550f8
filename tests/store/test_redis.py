"""Redis specifics: hot state expires by itself, and keys stay inside the prefix."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from appintegrity.errors import ConfigError, StoreUnavailableError
from appintegrity.store import ChallengeRecord, open_store
from appintegrity.store.base import Store, to_micros
from appintegrity.store.redis import CHALLENGE_RETENTION, LAYOUT_VERSION, RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_hot_state_carries_a_ttl_and_stays_in_the_prefix(
    redis_url: str, redis_isolated: str
) -> None:
    store = open_store(redis_isolated)
    assert isinstance(store, RedisStore)
    now = datetime.now(UTC)
    await store.add_challenge(ChallengeRecord("c1", "any", None, now, now + timedelta(minutes=5)))
    await store.consume_token_id("jti", now + timedelta(minutes=10), now)
    await store.hit_rate_limit("ip:1", 5, 60, now)
    await store.close()

    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{store.prefix}*"))
        assert len(keys) == 3
        retention_ms = (timedelta(minutes=5) + CHALLENGE_RETENTION).total_seconds() * 1000
        challenge_ttl = client.pttl(f"{store.prefix}c:c1")
        assert retention_ms - 5000 < challenge_ttl <= retention_ms
        assert 590_000 < client.pttl(f"{store.prefix}t:jti") <= 600_000
        rate_key = next(k for k in keys if ":rl:" in k)
        assert 0 < client.pttl(rate_key) <= 61_000
    finally:
        client.close()


def test_redis_store_refuses_a_cache_url() -> None:
    with pytest.raises(ConfigError):
        open_store("redis://127.0.0.1:6379/0", cache_url="redis://127.0.0.1:6379/1")


async def test_layout_1_data_joins_the_receipt_refresh_index(
    redis_url: str, redis_isolated: str
) -> None:
    """Keys written by layout 1 (no 'ru' field, no per-app refresh index) are found by the
    refresh query after ``migrate()``; migrating twice changes nothing."""
    store = open_store(redis_isolated)
    assert isinstance(store, RedisStore)
    prefix = store.prefix
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{prefix}schema_version", 1)
        for key_id, extra in (
            ("with-receipt", {"rcpt": b"R", "risk": 7}),
            ("without-receipt", {}),
            ("revoked", {"rcpt": b"R", "rev": to_micros(created)}),
        ):
            fields = {
                "app": "app",
                "plat": "ios",
                "pub": b"\x04" * 65,
                "ctr": 3,
                "env": "production",
                "c": to_micros(created),
                "seen": to_micros(created),
                **extra,
            }
            client.hset(f"{prefix}k:{key_id}", mapping=fields)  # type: ignore[arg-type]
            client.zadd(f"{prefix}keys", {key_id: to_micros(created)})
            client.zadd(f"{prefix}keys-by-app:app", {key_id: to_micros(created)})

        for _ in range(2):
            await store.migrate()
            due = await store.keys_due_for_receipt_refresh("app", datetime.now(UTC), 10)
            assert [k.key_id for k in due] == ["with-receipt"]
            assert due[0].receipt_updated_at == created
            assert (due[0].counter, due[0].risk_metric) == (3, 7)
        assert int(client.get(f"{prefix}schema_version") or 0) == LAYOUT_VERSION
        bare = await store.get_key("without-receipt")
        assert bare is not None
        assert bare.receipt_updated_at is None
    finally:
        client.close()
        await store.close()


async def _consume_burst(
    store: Store, prefix: str, count: int, now: datetime
) -> list[bool | BaseException]:
    """``count`` distinct token ids consumed all at once; each outcome, errors included."""
    return await asyncio.gather(
        *(
            store.consume_token_id(f"{prefix}-{n}", now + timedelta(minutes=1), now)
            for n in range(count)
        ),
        return_exceptions=True,
    )


async def test_a_burst_beyond_the_connection_limit_queues_instead_of_failing(
    redis_isolated: str,
) -> None:
    """More commands in flight than pooled connections wait for one (up to the socket timeout)
    rather than failing with MaxConnectionsError (a 503 for every request over the limit)."""
    store = open_store(f"{redis_isolated}&max_connections=20")
    assert isinstance(store, RedisStore)
    now = datetime.now(UTC)
    try:
        results = await _consume_burst(store, "burst", 200, now)
        assert results == [True] * 200
        # The default limit (100) queues a burst over it too.
        default = open_store(redis_isolated)
        try:
            results = await _consume_burst(default, "default", 150, now)
            assert results == [True] * 150
        finally:
            await default.close()
    finally:
        await store.close()


def test_max_connections_must_be_a_positive_integer() -> None:
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ConfigError, match="max_connections"):
            open_store(f"redis://127.0.0.1:6379/0?max_connections={bad}")


async def test_waiting_for_a_connection_is_bounded_by_the_timeout(redis_isolated: str) -> None:
    """With every connection busy, a call waits at most ``timeout``, then fails closed."""
    store = open_store(f"{redis_isolated}&max_connections=1&timeout=0.3")
    assert isinstance(store, RedisStore)
    pool = store._client.connection_pool
    held = await pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="Redis unavailable: ConnectionError"):
            await store.ping()
        assert 0.25 < time.monotonic() - started < 2
    finally:
        await pool.release(held)
    await store.ping()
    await store.close()
