"""Backends for the store contract suite: each test gets a fresh, isolated store.

``backend`` is parametrized over SQLite (a temporary file), PostgreSQL (a fresh schema, dropped
after), Redis (a fresh key prefix, deleted after) and the composite (both). ``backend.open()``
returns another store object on the same data, to play a second service instance.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from appintegrity.store import Store, open_store


class Backend:
    """Opens store objects that share one isolated dataset; closes them all at the end."""

    def __init__(self, name: str, url: str, cache_url: str | None = None) -> None:
        self.name = name
        self.url = url
        self.cache_url = cache_url
        self.opened: list[Store] = []

    @property
    def purges_by_ttl(self) -> bool:
        """Redis forgets challenges and token ids by itself; ``purge_expired`` is a no-op."""
        return self.name in ("redis", "composite")

    async def open(self) -> Store:
        store = open_store(self.url, self.cache_url)
        self.opened.append(store)
        await store.migrate()
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


def _with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def drop_schema(postgres_url: str, schema: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pg_isolated(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL with a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield _with_param(postgres_url, "schema", schema)
    drop_schema(postgres_url, schema)


@pytest.fixture
def redis_isolated(redis_url: str) -> Iterator[str]:
    """A Redis store URL with a key prefix of its own, deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    yield _with_param(redis_url, "prefix", prefix)
    delete_prefix(redis_url, prefix)


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("composite", id="composite", marks=[pytest.mark.postgres, pytest.mark.redis]),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    name: str = request.param
    get: Callable[[str], str] = request.getfixturevalue
    if name == "sqlite":
        chosen = Backend(name, f"sqlite:///{tmp_path / 'store.db'}")
    elif name == "postgres":
        chosen = Backend(name, get("pg_isolated"))
    elif name == "redis":
        chosen = Backend(name, get("redis_isolated"))
    else:
        chosen = Backend(name, get("pg_isolated"), get("redis_isolated"))
    try:
        yield chosen
    finally:
        await chosen.close_all()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
