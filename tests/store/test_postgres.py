"""PostgreSQL specifics: migrations that race, schema isolation, URL parameters."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from appintegrity.errors import ConfigError
from appintegrity.store import open_store
from appintegrity.store.postgres import SCHEMA_VERSION, PostgresStore

from .conftest import drop_schema

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_instances_migrating_together_apply_each_version_once(postgres_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    stores = [open_store(f"{postgres_url}?schema={schema}") for _ in range(3)]
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        await stores[0].migrate()  # and again: idempotent
        with psycopg.connect(postgres_url) as conn:
            versions = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                )
            }
        assert versions == [(SCHEMA_VERSION,)]
        assert {"challenges", "device_keys", "consumed_tokens", "signing_keys"} <= tables
    finally:
        for store in stores:
            await store.close()
        drop_schema(postgres_url, schema)


def test_url_parameters_are_ours_or_libpq_s() -> None:
    store = open_store(
        "postgresql://u@127.0.0.1:5432/db?schema=tenant_1&pool_max=3&connect_timeout=2"
    )
    assert isinstance(store, PostgresStore)
    assert store.schema == "tenant_1"
    for bad in ("schema=x;drop", "pool_max=many"):
        with pytest.raises(ConfigError):
            open_store(f"postgresql://u@127.0.0.1/db?{bad}")
