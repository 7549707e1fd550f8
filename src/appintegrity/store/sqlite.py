"""The embedded default store: one SQLite file in WAL mode (stdlib ``sqlite3``).

Guarantees:

* **Atomicity across threads and processes sharing the file.** Every operation that must be
  atomic is a single statement (``UPDATE … WHERE consumed_at IS NULL RETURNING``,
  ``UPDATE … WHERE counter < ?``, ``INSERT … ON CONFLICT DO NOTHING RETURNING``); SQLite runs
  writers one at a time, so exactly one concurrent caller wins. ``busy_timeout`` makes other
  processes wait for the write lock instead of failing.
* **Durability.** WAL with ``synchronous=NORMAL``: a committed transaction survives a crash of
  the process (``kill -9``) because it is in the WAL file the moment the call returns; it may be
  lost on power loss or an OS crash. ``add_key`` is stronger: it commits with
  ``synchronous=FULL`` (the WAL is fsynced), so an acknowledged registration survives power loss
  too. Registrations are rare; the hot path (challenges, counters) stays fast.
* **Never blocks the event loop.** All calls run on one dedicated thread per store that owns the
  connection, so in-process calls are also serialised without extra locking.

Times are stored as integer microseconds since the epoch (UTC) and returned as aware datetimes.
A backend error (locked for longer than the busy timeout, unreadable file, full disk, a directory
that cannot be created) raises ``StoreUnavailableError`` so the service fails closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from appintegrity.errors import StoreUnavailableError
from appintegrity.store.base import (
    ChallengeOutcome,
    ChallengeRecord,
    ConsumedChallenge,
    DebugTokenRecord,
    DeviceKey,
    RateLimitResult,
    SigningKeyRecord,
    check_list_limit,
    fixed_window,
    from_micros,
    to_micros,
)
from appintegrity.store.rows import (
    SELECT_DEBUG_TOKENS,
    SELECT_KEYS,
    SELECT_SIGNING_KEYS,
    challenge_record,
    debug_token_params,
    debug_token_record,
    device_key_params,
    device_key_record,
    signing_key_params,
    signing_key_record,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 2

# Each migration is a list of statements applied inside one IMMEDIATE transaction. Append-only:
# a released version is never edited, so every database upgrades through the same steps.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE challenges (
            value TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            key_id TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            consumed_at INTEGER
        ) WITHOUT ROWID""",
        "CREATE INDEX challenges_expires_at ON challenges (expires_at)",
        """CREATE TABLE device_keys (
            key_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            public_key BLOB NOT NULL,
            counter INTEGER NOT NULL,
            environment TEXT NOT NULL,
            receipt BLOB,
            risk_metric INTEGER,
            created_at INTEGER NOT NULL,
            last_seen_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
        "CREATE INDEX device_keys_created_at ON device_keys (created_at)",
        "CREATE INDEX device_keys_app_created_at ON device_keys (app_id, created_at)",
        """CREATE TABLE consumed_tokens (
            jti TEXT PRIMARY KEY,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX consumed_tokens_expires_at ON consumed_tokens (expires_at)",
        """CREATE TABLE signing_keys (
            kid TEXT NOT NULL UNIQUE,
            private_key_pem BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            retired_at INTEGER
        )""",
        """CREATE TABLE debug_tokens (
            token_id TEXT NOT NULL UNIQUE,
            app_id TEXT NOT NULL,
            name TEXT NOT NULL,
            secret_hash BLOB NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
        """CREATE TABLE rate_limits (
            bucket TEXT NOT NULL,
            window_seconds INTEGER NOT NULL,
            window_start INTEGER NOT NULL,
            hits INTEGER NOT NULL,
            PRIMARY KEY (bucket, window_seconds)
        ) WITHOUT ROWID""",
    ],
    # 2: when each receipt was last refreshed, so the refresher reads the oldest ones by index.
    # Existing receipts count as stored at registration (a refreshed one is then merely due
    # early once).
    2: [
        "ALTER TABLE device_keys ADD COLUMN receipt_updated_at INTEGER",
        "UPDATE device_keys SET receipt_updated_at = created_at WHERE receipt IS NOT NULL",
        "CREATE INDEX device_keys_app_receipt_updated_at "
        "ON device_keys (app_id, receipt_updated_at)",
    ],
}


class SQLiteStore:
    """``Store`` on one SQLite database file (or ``:memory:`` for tests)."""

    def __init__(self, path: str, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # Plumbing ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection, opened (and migrated) on first use; only ever touched by our thread."""
        if self._conn is None:
            if self.path != ":memory:":
                try:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    reason = exc.strerror or type(exc).__name__
                    raise StoreUnavailableError(
                        f"SQLite store {self.path!r}: cannot create its directory ({reason})"
                    ) from exc
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,
                cached_statements=256,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # IMMEDIATE takes the write lock first, so processes starting together migrate once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version in sorted(v for v in _MIGRATIONS if v > current):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailableError("the SQLite store is closed")

        def call() -> T:
            return func(self._connection())

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            raise StoreUnavailableError(f"SQLite store {self.path!r}: {exc}") from exc

    # Lifecycle ---------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the schema (also done when the connection opens)."""
        await self._run(self._migrate)

    async def close(self) -> None:
        if self._closed:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shut)
        self._closed = True
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    # Challenges --------------------------------------------------------------------------

    async def add_challenge(self, record: ChallengeRecord) -> None:
        params = (
            record.value,
            record.purpose,
            record.key_id,
            to_micros(record.created_at),
            to_micros(record.expires_at),
        )

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO challenges (value, purpose, key_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                params,
            )

        try:
            await self._run(insert)
        except sqlite3.IntegrityError as exc:
            raise ValueError("a challenge with this value already exists") from exc

    async def consume_challenge(self, value: str, now: datetime) -> ConsumedChallenge:
        now_us = to_micros(now)

        def consume(conn: sqlite3.Connection) -> tuple[bool, tuple[Any, ...] | None]:
            # One statement: only the caller whose UPDATE matched sees a row.
            rows = conn.execute(
                "UPDATE challenges SET consumed_at = ? WHERE value = ? AND consumed_at IS NULL "
                "RETURNING purpose, key_id, created_at, expires_at",
                (now_us, value),
            ).fetchall()
            if rows:
                return True, rows[0]
            row = conn.execute(
                "SELECT purpose, key_id, created_at, expires_at FROM challenges WHERE value = ?",
                (value,),
            ).fetchone()
            return False, row

        won, row = await self._run(consume)
        if row is None:
            return ConsumedChallenge(ChallengeOutcome.UNKNOWN, None)
        record = challenge_record(value, row, from_micros)
        if not won:
            return ConsumedChallenge(ChallengeOutcome.CONSUMED, record)
        if now_us >= row[3]:
            return ConsumedChallenge(ChallengeOutcome.EXPIRED, record)
        return ConsumedChallenge(ChallengeOutcome.OK, record)

    # Device keys -------------------------------------------------------------------------

    async def add_key(self, key: DeviceKey) -> bool:
        params = device_key_params(key, to_micros)

        def insert(conn: sqlite3.Connection) -> bool:
            # FULL for this one commit: an acknowledged registration survives power loss too.
            conn.execute("PRAGMA synchronous = FULL")
            try:
                rows = conn.execute(
                    "INSERT INTO device_keys (key_id, app_id, platform, public_key, counter, "
                    "environment, receipt, risk_metric, created_at, last_seen_at, revoked_at, "
                    "receipt_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
                    params,
                ).fetchall()
            finally:
                conn.execute("PRAGMA synchronous = NORMAL")
            return bool(rows)

        return await self._run(insert)

    async def get_key(self, key_id: str) -> DeviceKey | None:
        def select(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                SELECT_KEYS + " WHERE key_id = ?", (key_id,)
            ).fetchone()
            return row

        row = await self._run(select)
        return None if row is None else device_key_record(row, from_micros)

    async def advance_counter(self, key_id: str, counter: int, now: datetime) -> bool:
        params = (counter, to_micros(now), key_id, counter)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE device_keys SET counter = ?, last_seen_at = ? "
                "WHERE key_id = ? AND counter < ? AND revoked_at IS NULL",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        params = (to_micros(now), key_id)

        def update(conn: sqlite3.Connection) -> bool:
            # Keep the first revocation time if revoked twice.
            cursor = conn.execute(
                "UPDATE device_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    async def list_keys(self, app_id: str | None = None, limit: int = 1000) -> list[DeviceKey]:
        check_list_limit(limit)

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if app_id is None:
                return conn.execute(
                    SELECT_KEYS + " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            return conn.execute(
                SELECT_KEYS + " WHERE app_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (app_id, limit),
            ).fetchall()

        return [device_key_record(row, from_micros) for row in await self._run(select)]

    async def update_receipt(
        self,
        key_id: str,
        receipt: bytes,
        risk_metric: int | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        params = (receipt, risk_metric, to_micros(now or datetime.now(UTC)), key_id)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE device_keys SET receipt = ?, risk_metric = ?, receipt_updated_at = ? "
                "WHERE key_id = ?",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    async def mark_receipt_checked(self, key_id: str, receipt: bytes, now: datetime) -> bool:
        params = (to_micros(now), key_id, receipt)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE device_keys SET receipt_updated_at = ? "
                "WHERE key_id = ? AND receipt = ? AND revoked_at IS NULL",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    async def keys_due_for_receipt_refresh(
        self, app_id: str, before: datetime, limit: int
    ) -> list[DeviceKey]:
        if limit <= 0:
            return []
        params = (app_id, to_micros(before), limit)

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # receipt_updated_at is NULL exactly when receipt is: the range excludes those.
            return conn.execute(
                SELECT_KEYS + " WHERE app_id = ? AND receipt_updated_at < ? "
                "AND revoked_at IS NULL AND receipt IS NOT NULL "
                "ORDER BY receipt_updated_at, rowid LIMIT ?",
                params,
            ).fetchall()

        return [device_key_record(row, from_micros) for row in await self._run(select)]

    # Token ids ---------------------------------------------------------------------------

    async def consume_token_id(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        to_micros(now)  # refuses naive datetimes, like every other method
        params = (jti, to_micros(expires_at))

        def insert(conn: sqlite3.Connection) -> bool:
            rows = conn.execute(
                "INSERT INTO consumed_tokens (jti, expires_at) VALUES (?, ?) "
                "ON CONFLICT (jti) DO NOTHING RETURNING jti",
                params,
            ).fetchall()
            return bool(rows)

        return await self._run(insert)

    # Signing keys ------------------------------------------------------------------------

    async def add_signing_key(self, record: SigningKeyRecord) -> None:
        params = signing_key_params(record, to_micros)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA synchronous = FULL")
            try:
                conn.execute(
                    "INSERT INTO signing_keys (kid, private_key_pem, created_at, retired_at) "
                    "VALUES (?, ?, ?, ?)",
                    params,
                )
            finally:
                conn.execute("PRAGMA synchronous = NORMAL")

        try:
            await self._run(insert)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"signing key {record.kid!r} already exists") from exc

    async def retire_signing_key(self, kid: str, now: datetime) -> bool:
        params = (to_micros(now), kid)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE signing_keys SET retired_at = coalesce(retired_at, ?) WHERE kid = ?",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                SELECT_SIGNING_KEYS + " ORDER BY created_at DESC, rowid DESC"
            ).fetchall()

        return [signing_key_record(row, from_micros) for row in await self._run(select)]

    async def delete_signing_key(self, kid: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,)).rowcount == 1

        return await self._run(delete)

    # Debug tokens ------------------------------------------------------------------------

    async def add_debug_token(self, record: DebugTokenRecord) -> None:
        params = debug_token_params(record, to_micros)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO debug_tokens "
                "(token_id, app_id, name, secret_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )

        try:
            await self._run(insert)
        except sqlite3.IntegrityError as exc:
            raise ValueError("a debug token with this id or secret already exists") from exc

    async def find_debug_token(self, secret_hash: bytes) -> DebugTokenRecord | None:
        def select(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                SELECT_DEBUG_TOKENS + " WHERE secret_hash = ?",
                (secret_hash,),
            ).fetchone()
            return row

        row = await self._run(select)
        return None if row is None else debug_token_record(row, from_micros)

    async def list_debug_tokens(self, app_id: str | None = None) -> list[DebugTokenRecord]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if app_id is None:
                return conn.execute(
                    SELECT_DEBUG_TOKENS + " ORDER BY created_at DESC, rowid DESC"
                ).fetchall()
            return conn.execute(
                SELECT_DEBUG_TOKENS + " WHERE app_id = ? ORDER BY created_at DESC, rowid DESC",
                (app_id,),
            ).fetchall()

        return [debug_token_record(row, from_micros) for row in await self._run(select)]

    async def revoke_debug_token(self, token_id: str, now: datetime) -> bool:
        params = (to_micros(now), token_id)

        def update(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE debug_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE token_id = ?",
                params,
            )
            return cursor.rowcount == 1

        return await self._run(update)

    # Rate limits -------------------------------------------------------------------------

    async def hit_rate_limit(
        self, bucket: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitResult:
        start, retry_after = fixed_window(now, window_seconds)
        params = (bucket, window_seconds, start)

        def hit(conn: sqlite3.Connection) -> int:
            # One upsert: a newer window resets the count, the same window adds one. A hit
            # stamped with an older window (a lagging clock) counts against the current one.
            row = conn.execute(
                "INSERT INTO rate_limits (bucket, window_seconds, window_start, hits) "
                "VALUES (?, ?, ?, 1) ON CONFLICT (bucket, window_seconds) DO UPDATE SET "
                "hits = CASE WHEN excluded.window_start > window_start THEN 1 ELSE hits + 1 END, "
                "window_start = max(window_start, excluded.window_start) "
                "RETURNING hits",
                params,
            ).fetchone()
            hits: int = row[0]
            return hits

        hits = await self._run(hit)
        return RateLimitResult(allowed=hits <= limit, retry_after_seconds=retry_after)

    # Housekeeping ------------------------------------------------------------------------

    async def purge_expired(self, now: datetime) -> int:
        now_us = to_micros(now)

        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = conn.execute(
                    "DELETE FROM challenges WHERE expires_at <= ?", (now_us,)
                ).rowcount
                gone += conn.execute(
                    "DELETE FROM consumed_tokens WHERE expires_at <= ?", (now_us,)
                ).rowcount
                # Windows that have ended carry no information; they are not counted.
                conn.execute(
                    "DELETE FROM rate_limits WHERE window_start + window_seconds * 1000000 <= ?",
                    (now_us,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone

        return await self._run(purge)
