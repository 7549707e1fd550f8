"""A backend that goes away: calls fail closed with StoreUnavailableError, then recover alone.

Each store talks to PostgreSQL or Redis through ``TcpProxy``; stopping the proxy resets the
connections and refuses new ones, like a server that died; starting it again is the server
coming back. Nothing is accepted twice across the outage.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest

from appintegrity.errors import StoreUnavailableError
from appintegrity.store import ChallengeOutcome, ChallengeRecord, DeviceKey, Store, open_store

from .proxy import TcpProxy

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)


def _through(url: str, port: int, extra: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if ":" in parts.netloc.split("@")[-1] else parts.netloc
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}", query=query))


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def proxied(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TcpProxy, Store]]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_isolated")
        proxy = TcpProxy("127.0.0.1", 5432)
        proxied_url = _through(url, proxy.port, "pool_timeout=1&connect_timeout=1")
    else:
        url = request.getfixturevalue("redis_isolated")
        proxy = TcpProxy("127.0.0.1", 6379)
        proxied_url = _through(url, proxy.port, "timeout=1")
    await proxy.start()
    store = open_store(proxied_url)
    try:
        await store.migrate()
        yield proxy, store
    finally:
        await store.close()
        await proxy.stop()


async def _until_available(store: Store, timeout: float = 15) -> float:
    started = time.monotonic()
    while True:
        try:
            await store.ping()
            return time.monotonic() - started
        except StoreUnavailableError:
            if time.monotonic() - started > timeout:
                raise
            await asyncio.sleep(0.1)


async def test_unreachable_backend_raises_store_unavailable_then_recovers(
    proxied: tuple[TcpProxy, Store],
) -> None:
    proxy, store = proxied
    key = DeviceKey(secrets.token_hex(8), "app", "ios", b"\x04" * 65, 0, "production", None,
                    None, NOW, NOW)  # fmt: skip
    assert await store.add_key(key) is True

    await proxy.stop()
    for call in (
        store.ping(),
        store.get_key(key.key_id),
        store.advance_counter(key.key_id, 1, NOW),
        store.consume_challenge("c", NOW),
        store.consume_token_id("jti", NOW + timedelta(hours=1), NOW),
        store.hit_rate_limit("b", 1, 60, NOW),
    ):
        with pytest.raises(StoreUnavailableError):
            await call

    await proxy.start()
    recovered_after = await _until_available(store)
    print(f"recovered after {recovered_after:.2f} s")
    assert await store.advance_counter(key.key_id, 1, NOW) is True
    assert await store.get_key(key.key_id) is not None


async def test_outage_mid_load_never_accepts_a_challenge_twice(
    proxied: tuple[TcpProxy, Store],
) -> None:
    proxy, store = proxied
    records = [
        ChallengeRecord(secrets.token_urlsafe(16), "any", None, NOW, NOW + timedelta(minutes=5))
        for _ in range(100)
    ]
    for record in records:
        await store.add_challenge(record)

    ok: dict[str, int] = {}
    unexpected: list[BaseException] = []
    refused: list[StoreUnavailableError] = []

    async def consume(value: str) -> None:
        try:
            result = await store.consume_challenge(value, NOW)
        except StoreUnavailableError as exc:
            refused.append(exc)
            return
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            unexpected.append(exc)
            return
        if result.outcome is ChallengeOutcome.OK:
            ok[value] = ok.get(value, 0) + 1

    async def load() -> None:
        for record in records:
            await asyncio.gather(consume(record.value), consume(record.value))
            await asyncio.sleep(0.005)

    async def outage() -> None:
        await asyncio.sleep(0.1)
        await proxy.stop()
        await asyncio.sleep(0.3)
        await proxy.start()

    await asyncio.gather(load(), outage())
    assert unexpected == []
    assert refused, "the outage did not hit any call"
    assert all(count == 1 for count in ok.values())

    await _until_available(store)
    # After recovery every challenge is known and none can be used again.
    for record in records:
        outcome = (await store.consume_challenge(record.value, NOW)).outcome
        assert outcome in (ChallengeOutcome.OK, ChallengeOutcome.CONSUMED)
        if record.value in ok:
            assert outcome is ChallengeOutcome.CONSUMED
