"""Redis specifics: hot state expires by itself, and keys stay inside the prefix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from appintegrity.errors import ConfigError
from appintegrity.store import ChallengeRecord, open_store
from appintegrity.store.redis import CHALLENGE_RETENTION, RedisStore

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
