"""PostgreSQL specifics: migrations that race, schema isolation, URL parameters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from appintegrity.errors import ConfigError
from appintegrity.store import open_store
from appintegrity.store.postgres import _MIGRATIONS, SCHEMA_VERSION, PostgresStore

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
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
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
    for bad in ("schema=x;drop", "pool_max=many", "no_such_libpq_parameter=1"):
        with pytest.raises(ConfigError):
            open_store(f"postgresql://u@127.0.0.1/db?{bad}")


async def test_a_version_1_database_is_upgraded_in_place(postgres_url: str) -> None:
    """A database made by the version-1 schema (and holding keys) gains receipt_updated_at:
    existing receipts count as stored at registration, and the refresh query finds them."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(f'SET search_path = "{schema}"')
            conn.execute(
                "CREATE TABLE schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for statement in _MIGRATIONS[1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (1)")
            for key_id, receipt in (("with-receipt", b"R"), ("without-receipt", None)):
                conn.execute(
                    "INSERT INTO device_keys (key_id, app_id, platform, public_key, counter, "
                    "environment, receipt, risk_metric, created_at, last_seen_at) "
                    "VALUES (%s, 'app', 'ios', %s, 3, 'production', %s, 7, %s, %s)",
                    (key_id, b"\x04" * 65, receipt, created, created),
                )

        store = open_store(f"{postgres_url}?schema={schema}")
        try:
            await store.migrate()
            old = await store.get_key("with-receipt")
            assert old is not None
            assert (old.counter, old.receipt, old.risk_metric) == (3, b"R", 7)
            assert old.receipt_updated_at == created
            bare = await store.get_key("without-receipt")
            assert bare is not None
            assert bare.receipt_updated_at is None
            due = await store.keys_due_for_receipt_refresh("app", datetime.now(UTC), 10)
            assert [k.key_id for k in due] == ["with-receipt"]
        finally:
            await store.close()
        with psycopg.connect(postgres_url) as conn:
            versions = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
            indexes = {
                row[0]
                for row in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
                )
            }
        assert versions == [(1,), (2,)]
        assert "device_keys_app_receipt_updated_at" in indexes
    finally:
        drop_schema(postgres_url, schema)


def test_schema_names_are_lower_case_identifiers() -> None:
    """PostgreSQL folds an unquoted name to lower case: ``Tenant`` would name two schemas (the
    one created and the one searched), so only names that mean one thing are accepted."""
    for good in ("tenant_1", "_t", "a" * 63):
        store = open_store(f"postgresql://u@127.0.0.1/db?schema={good}")
        assert isinstance(store, PostgresStore)
        assert store.schema == good
    for bad in ("Review_Case", "TENANT", "1tenant", "a" * 64, "tenant-1", "tenänt", ""):
        with pytest.raises(ConfigError, match="invalid PostgreSQL schema name"):
            open_store(f"postgresql://u@127.0.0.1/db?schema={bad}")
        with pytest.raises(ConfigError, match="invalid PostgreSQL schema name"):
            PostgresStore("postgresql://u@127.0.0.1/db", schema=bad)


async def _show(store: object, setting: str) -> str:
    assert isinstance(store, PostgresStore)
    row = await store._fetchone(f"SHOW {setting}")
    assert row is not None
    return str(row[0])


async def test_libpq_parameters_reach_the_server_unchanged_beside_the_schema(
    pg_isolated: str,
) -> None:
    """``schema=`` adds to the user's ``options`` instead of replacing them, and the URL's other
    parameters reach libpq as written: ``%20`` is a space and ``+`` a plus sign, as libpq
    reads them."""
    url = (
        f"{pg_isolated}&application_name=store%20test+plus%2B"
        "&options=-c%20statement_timeout%3D1234%20-c%20lock_timeout%3D567"
    )
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    try:
        await store.migrate()
        assert await _show(store, "application_name") == "store test+plus+"
        assert await _show(store, "statement_timeout") == "1234ms"
        assert await _show(store, "lock_timeout") == "567ms"
        assert await _show(store, "search_path") == store.schema
    finally:
        await store.close()


async def test_pgoptions_from_the_environment_are_kept_beside_the_schema(
    pg_isolated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq ignores ``PGOPTIONS`` once ``options`` is given, so the schema's search path must
    not push the environment's options out."""
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=4321")
    store = open_store(pg_isolated)
    assert isinstance(store, PostgresStore)
    try:
        await store.migrate()
        assert await _show(store, "statement_timeout") == "4321ms"
        assert await _show(store, "search_path") == store.schema
    finally:
        await store.close()
