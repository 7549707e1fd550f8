"""SQLite specifics: several processes sharing one file, crash durability, URL parsing."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appintegrity.errors import ConfigError, StoreUnavailableError
from appintegrity.store import ChallengeOutcome, ChallengeRecord, open_store
from appintegrity.store.base import to_micros
from appintegrity.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, SQLiteStore

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)


def _consume_in_process(path: str, value: str, attempts: int) -> list[str]:
    """Run in a child process: a separate store object and connection on the same file."""

    async def run() -> list[str]:
        store = SQLiteStore(path)
        try:
            results = await asyncio.gather(
                *(store.consume_challenge(value, datetime.now(UTC)) for _ in range(attempts))
            )
            return [r.outcome.value for r in results]
        finally:
            await store.close()

    return asyncio.run(run())


async def test_processes_sharing_a_file_consume_a_challenge_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = SQLiteStore(path)
    await store.add_challenge(
        ChallengeRecord("shared-challenge", "any", None, NOW, NOW + timedelta(minutes=5))
    )
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        per_process = pool.starmap(
            _consume_in_process, [(path, "shared-challenge", 13) for _ in range(4)]
        )
    outcomes = [o for batch in per_process for o in batch]
    assert len(outcomes) == 52
    assert outcomes.count(ChallengeOutcome.OK.value) == 1
    assert outcomes.count(ChallengeOutcome.CONSUMED.value) == 51
    await store.close()


_REGISTRAR = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from appintegrity.store.base import DeviceKey
    from appintegrity.store.sqlite import SQLiteStore

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        i = 0
        while True:
            now = datetime.now(UTC)
            key = DeviceKey(f"key-{i}", "app", "ios", b"\\x04" * 65, 0, "production",
                            None, None, now, now)
            assert await store.add_key(key)
            print(key.key_id, flush=True)  # acknowledged
            i += 1

    asyncio.run(main())
    """
)


async def test_every_acknowledged_key_survives_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "durable.db")
    child = subprocess.Popen(
        [sys.executable, "-c", _REGISTRAR, path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 20
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    # Keys acknowledged while we were killing count too.
    acknowledged.extend(line.strip() for line in child.stdout.read().splitlines() if line)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 50

    store = SQLiteStore(path)
    try:
        missing = [k for k in acknowledged if await store.get_key(k) is None]
        assert missing == []
    finally:
        await store.close()


async def test_in_memory_store_works(tmp_path: Path) -> None:
    store = open_store("sqlite:///:memory:")
    await store.migrate()
    record = ChallengeRecord("c", "any", None, NOW, NOW + timedelta(minutes=1))
    await store.add_challenge(record)
    assert (await store.consume_challenge("c", NOW)).outcome is ChallengeOutcome.OK
    await store.close()


async def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/rel.db")
    assert isinstance(relative, SQLiteStore)
    await relative.ping()
    await relative.close()
    assert (tmp_path / "data" / "rel.db").exists()

    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == f"{tmp_path}/abs.db"
    await absolute.close()


def test_bad_urls_are_config_errors() -> None:
    for url in ["mysql://x/y", "sqlite:///", "sqlite:///a.db?mode=ro", "file.db"]:
        with pytest.raises(ConfigError):
            open_store(url)
    with pytest.raises(ConfigError):
        open_store("sqlite:///a.db", cache_url="redis://127.0.0.1:6379/0")


async def test_unopenable_file_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    store = SQLiteStore(str(tmp_path / "a-directory.db"))
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    await store.close()


async def test_closed_store_raises_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "closed.db"))
    await store.ping()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.ping()


def test_cli_migrate_and_purge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    for action, expected in (("migrate", "schema up to date"), ("purge", "purged 0 expired")):
        done = subprocess.run(
            [sys.executable, "-m", "appintegrity", "db", action, "--store", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
    assert (tmp_path / "cli.db").exists()

    refused = subprocess.run(
        [sys.executable, "-m", "appintegrity", "db", "migrate", "--store", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "unknown store URL scheme" in refused.stderr


async def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    """A file made by the version-1 schema (and holding keys) gains receipt_updated_at:
    existing receipts count as stored at registration, and the refresh query finds them."""
    path = tmp_path / "v1.db"
    created = NOW.replace(microsecond=0) - timedelta(days=3)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in _MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    for key_id, receipt in (("with-receipt", b"R"), ("without-receipt", None)):
        conn.execute(
            "INSERT INTO device_keys (key_id, app_id, platform, public_key, counter, "
            "environment, receipt, risk_metric, created_at, last_seen_at) "
            "VALUES (?, 'app', 'ios', ?, 3, 'production', ?, 7, ?, ?)",
            (key_id, b"\x04" * 65, receipt, to_micros(created), to_micros(created)),
        )
    conn.close()

    store = SQLiteStore(str(path))
    try:
        old = await store.get_key("with-receipt")
        assert old is not None
        assert (old.counter, old.receipt, old.risk_metric) == (3, b"R", 7)
        assert old.receipt_updated_at == created
        bare = await store.get_key("without-receipt")
        assert bare is not None
        assert bare.receipt_updated_at is None
        due = await store.keys_due_for_receipt_refresh("app", NOW, 10)
        assert [k.key_id for k in due] == ["with-receipt"]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT key_id FROM device_keys WHERE app_id = ? "
            "AND receipt_updated_at < ? AND revoked_at IS NULL AND receipt IS NOT NULL "
            "ORDER BY receipt_updated_at, rowid LIMIT 5",
            ("app", 0),
        ).fetchall()
    finally:
        conn.close()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    # The refresh query is served by the (app_id, receipt_updated_at) index, not a scan.
    assert any("device_keys_app_receipt_updated_at" in str(row) for row in plan), plan


async def test_a_directory_that_cannot_be_created_raises_store_unavailable(tmp_path: Path) -> None:
    """A path under a regular file: the directory cannot be made. Fail closed with the path in
    the message, as for a file that cannot be opened, not with a bare OSError."""
    (tmp_path / "a-file").write_text("not a directory")
    path = tmp_path / "a-file" / "data" / "store.db"
    store = open_store(f"sqlite:///{path}")
    try:
        for call in (store.migrate, store.ping):
            with pytest.raises(StoreUnavailableError) as caught:
                await call()
            assert caught.value.status == 503
            assert str(path) in caught.value.message
    finally:
        await store.close()
