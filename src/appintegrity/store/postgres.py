"""The PostgreSQL store: shared state for several service instances (psycopg 3, async pool).

Guarantees:

* **Atomicity across instances.** Every operation that must be atomic is one statement:
  ``UPDATE … WHERE consumed_at IS NULL RETURNING`` (challenges), ``UPDATE … WHERE counter < %s
  AND revoked_at IS NULL`` (counters), ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (keys,
  token ids), ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (rate limits). Row locks and
  PostgreSQL's re-check of the ``WHERE`` clause after a concurrent update let exactly one
  concurrent caller win, under the default READ COMMITTED isolation.
* **Durability.** Keys, counters, receipts, signing keys, debug tokens and consumed token ids
  are in ordinary (WAL-logged) tables and acknowledged only after commit. Challenges and
  rate-limit windows are in UNLOGGED tables: faster, and if PostgreSQL crashes they are emptied,
  which fails closed (a lost challenge is ``UNKNOWN``; a lost window only forgives some hits).
* **Migrations** run in ``migrate()``: idempotent, versioned in ``schema_version``, serialised by
  ``pg_advisory_xact_lock`` so instances starting together do not race.
* **Failure.** Connection errors and pool timeouts raise ``StoreUnavailableError``; the pool
  replaces broken connections by itself, so the store recovers when PostgreSQL is back.

``?schema=name`` in the URL puts every table in that schema (created by ``migrate()``); the name
is lower-case letters, digits and ``_``, not starting with a digit. Its search path is added to
the user's libpq ``options`` (or ``PGOPTIONS``); every other URL parameter reaches libpq as
written.
"""

from __future__ import annotations

import asyncio
import os
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from appintegrity.errors import ConfigError, StoreUnavailableError
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

SCHEMA_VERSION = 2

# Lower case only: PostgreSQL folds unquoted names to lower case, so ``Tenant`` would be two
# schemas (the one created, quoted, and the one on the search path).
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Advisory lock namespace for migrations ("appi" in ASCII); the schema name picks the lock.
_LOCK_CLASS = 0x61707069

# Append-only: a released version is never edited, so every database upgrades the same way.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE UNLOGGED TABLE challenges (
            value text PRIMARY KEY,
            purpose text NOT NULL,
            key_id text,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            consumed_at timestamptz
        )""",
        "CREATE INDEX challenges_expires_at ON challenges (expires_at)",
        """CREATE TABLE device_keys (
            seq bigserial NOT NULL,
            key_id text PRIMARY KEY,
            app_id text NOT NULL,
            platform text NOT NULL,
            public_key bytea NOT NULL,
            counter bigint NOT NULL,
            environment text NOT NULL,
            receipt bytea,
            risk_metric integer,
            created_at timestamptz NOT NULL,
            last_seen_at timestamptz NOT NULL,
            revoked_at timestamptz
        )""",
        "CREATE INDEX device_keys_created_at ON device_keys (created_at DESC, seq DESC)",
        "CREATE INDEX device_keys_app_created_at ON device_keys (app_id, created_at DESC)",
        """CREATE TABLE consumed_tokens (
            jti text PRIMARY KEY,
            expires_at timestamptz NOT NULL
        )""",
        "CREATE INDEX consumed_tokens_expires_at ON consumed_tokens (expires_at)",
        """CREATE TABLE signing_keys (
            seq bigserial NOT NULL,
            kid text PRIMARY KEY,
            private_key_pem bytea NOT NULL,
            created_at timestamptz NOT NULL,
            retired_at timestamptz
        )""",
        """CREATE TABLE debug_tokens (
            seq bigserial NOT NULL,
            token_id text PRIMARY KEY,
            app_id text NOT NULL,
            name text NOT NULL,
            secret_hash bytea NOT NULL UNIQUE,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz
        )""",
        """CREATE UNLOGGED TABLE rate_limits (
            bucket text NOT NULL,
            window_seconds integer NOT NULL,
            window_start bigint NOT NULL,
            hits integer NOT NULL,
            PRIMARY KEY (bucket, window_seconds)
        )""",
    ],
    # 2: when each receipt was last refreshed, so the refresher reads the oldest ones by index.
    # Existing receipts count as stored at registration (a refreshed one is then merely due
    # early once).
    2: [
        "ALTER TABLE device_keys ADD COLUMN receipt_updated_at timestamptz",
        "UPDATE device_keys SET receipt_updated_at = created_at WHERE receipt IS NOT NULL",
        "CREATE INDEX device_keys_app_receipt_updated_at "
        "ON device_keys (app_id, receipt_updated_at)",
    ],
}

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _aware(moment: datetime) -> datetime:
    to_micros(moment)  # refuses naive datetimes
    return moment


class PostgresStore:
    """``Store`` on PostgreSQL through an async connection pool."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 5.0,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"invalid PostgreSQL schema name {schema!r}: use lower-case letters, digits "
                "and _ (not a digit first), at most 63 characters"
            )
        self.schema = schema
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            # libpq's message may quote the string, password included: not repeated here.
            raise ConfigError(
                "invalid PostgreSQL connection string: libpq cannot parse it"
            ) from exc
        kwargs: dict[str, Any] = {"autocommit": True}
        if schema is not None:
            # libpq ignores PGOPTIONS once ``options`` is given: keep the user's options, from
            # the connection string or else the environment, and add the search path.
            theirs = given.get("options")
            theirs = str(theirs) if theirs is not None else os.environ.get("PGOPTIONS", "")
            kwargs["options"] = f"{theirs} -c search_path={schema}".strip()
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name="appintegrity-store",
        )
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._check_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """Parse our own query parameters (schema, pool_*) out; the rest goes to libpq as
        written (not decoded and encoded again: libpq reads ``+`` as a plus sign, not a space)."""
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        theirs: list[str] = []
        for piece in parts.query.split("&"):
            raw_name, _, raw_value = piece.partition("=")
            name = unquote(raw_name)
            if name in ("schema", "pool_min", "pool_max", "pool_timeout"):
                ours[name] = unquote(raw_value)
            elif piece:
                theirs.append(piece)
        conninfo = urlunsplit(parts._replace(query="&".join(theirs)))
        try:
            return cls(
                conninfo,
                schema=ours.get("schema"),
                min_size=int(ours.get("pool_min", "2")),
                max_size=int(ours.get("pool_max", "10")),
                timeout=float(ours.get("pool_timeout", "5")),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid PostgreSQL store URL parameter: {exc}") from exc

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # Plumbing ----------------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                # wait=False: an unreachable server shows up as PoolTimeout on first use.
                await self._pool.open(wait=False)
                self._opened = True

    def _recheck_pool(self) -> None:
        """After a connection error, test the idle connections so dead ones are replaced."""
        if self._check_task is None or self._check_task.done():
            self._check_task = asyncio.create_task(self._check_quietly())

    async def _check_quietly(self) -> None:
        try:
            await self._pool.check()
        except _UNAVAILABLE:
            pass

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        if self._pool.closed and self._opened:
            raise StoreUnavailableError("the PostgreSQL store is closed")
        try:
            await self._ensure_open()
            async with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            if not self._pool.closed:
                self._recheck_pool()
            raise StoreUnavailableError(f"PostgreSQL unavailable: {type(exc).__name__}") from exc

    async def _fetchone(self, query: str, params: tuple[Any, ...] = ()) -> TupleRow | None:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

    async def _fetchall(self, query: str, params: tuple[Any, ...] = ()) -> list[TupleRow]:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _rowcount(self, query: str, params: tuple[Any, ...] = ()) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # Lifecycle ---------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Create the schema and apply pending migrations, once, whoever starts first."""
        lock_key = zlib.crc32((self.schema or "public").encode()) & 0x7FFFFFFF
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, lock_key))
            if self.schema is not None:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            row = await cursor.fetchone()
            current = 0 if row is None else int(row[0])
            for version in sorted(v for v in _MIGRATIONS if v > current):
                for statement in _MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    async def close(self) -> None:
        if self._check_task is not None:
            self._check_task.cancel()
        await self._pool.close()

    async def ping(self) -> None:
        await self._fetchone("SELECT 1")

    # Challenges --------------------------------------------------------------------------

    async def add_challenge(self, record: ChallengeRecord) -> None:
        try:
            await self._rowcount(
                "INSERT INTO challenges (value, purpose, key_id, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    record.value,
                    record.purpose,
                    record.key_id,
                    _aware(record.created_at),
                    _aware(record.expires_at),
                ),
            )
        except pg_errors.UniqueViolation as exc:
            raise ValueError("a challenge with this value already exists") from exc

    async def consume_challenge(self, value: str, now: datetime) -> ConsumedChallenge:
        # One statement, one round trip. The UPDATE marks it used for exactly one caller; the
        # second branch (same snapshot) reports the challenge to the callers who lost.
        row = await self._fetchone(
            "WITH won AS (UPDATE challenges SET consumed_at = %s "
            "WHERE value = %s AND consumed_at IS NULL "
            "RETURNING purpose, key_id, created_at, expires_at) "
            "SELECT true, purpose, key_id, created_at, expires_at FROM won "
            "UNION ALL "
            "SELECT false, purpose, key_id, created_at, expires_at FROM challenges "
            "WHERE value = %s AND NOT EXISTS (SELECT 1 FROM won)",
            (_aware(now), value, value),
        )
        if row is None:
            return ConsumedChallenge(ChallengeOutcome.UNKNOWN, None)
        record = challenge_record(value, row[1:], _utc)
        if not row[0]:
            return ConsumedChallenge(ChallengeOutcome.CONSUMED, record)
        if now >= record.expires_at:
            return ConsumedChallenge(ChallengeOutcome.EXPIRED, record)
        return ConsumedChallenge(ChallengeOutcome.OK, record)

    # Device keys -------------------------------------------------------------------------

    async def add_key(self, key: DeviceKey) -> bool:
        row = await self._fetchone(
            "INSERT INTO device_keys (key_id, app_id, platform, public_key, counter, "
            "environment, receipt, risk_metric, created_at, last_seen_at, revoked_at, "
            "receipt_updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
            device_key_params(key, _aware),
        )
        return row is not None

    async def get_key(self, key_id: str) -> DeviceKey | None:
        row = await self._fetchone(SELECT_KEYS + " WHERE key_id = %s", (key_id,))
        return None if row is None else device_key_record(row, _utc)

    async def advance_counter(self, key_id: str, counter: int, now: datetime) -> bool:
        count = await self._rowcount(
            "UPDATE device_keys SET counter = %s, last_seen_at = %s "
            "WHERE key_id = %s AND counter < %s AND revoked_at IS NULL",
            (counter, _aware(now), key_id, counter),
        )
        return count == 1

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        count = await self._rowcount(
            "UPDATE device_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s",
            (_aware(now), key_id),
        )
        return count == 1

    async def list_keys(self, app_id: str | None = None, limit: int = 1000) -> list[DeviceKey]:
        check_list_limit(limit)
        if app_id is None:
            rows = await self._fetchall(
                SELECT_KEYS + " ORDER BY created_at DESC, seq DESC LIMIT %s", (limit,)
            )
        else:
            rows = await self._fetchall(
                SELECT_KEYS + " WHERE app_id = %s ORDER BY created_at DESC, seq DESC LIMIT %s",
                (app_id, limit),
            )
        return [device_key_record(row, _utc) for row in rows]

    async def update_receipt(
        self,
        key_id: str,
        receipt: bytes,
        risk_metric: int | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        count = await self._rowcount(
            "UPDATE device_keys SET receipt = %s, risk_metric = %s, receipt_updated_at = %s "
            "WHERE key_id = %s",
            (receipt, risk_metric, _aware(now or datetime.now(UTC)), key_id),
        )
        return count == 1

    async def mark_receipt_checked(self, key_id: str, receipt: bytes, now: datetime) -> bool:
        count = await self._rowcount(
            "UPDATE device_keys SET receipt_updated_at = %s "
            "WHERE key_id = %s AND receipt = %s AND revoked_at IS NULL",
            (_aware(now), key_id, receipt),
        )
        return count == 1

    async def keys_due_for_receipt_refresh(
        self, app_id: str, before: datetime, limit: int
    ) -> list[DeviceKey]:
        if limit <= 0:
            return []
        # receipt_updated_at is NULL exactly when receipt is: the range excludes those.
        rows = await self._fetchall(
            SELECT_KEYS + " WHERE app_id = %s AND receipt_updated_at < %s "
            "AND revoked_at IS NULL AND receipt IS NOT NULL "
            "ORDER BY receipt_updated_at, seq LIMIT %s",
            (app_id, _aware(before), limit),
        )
        return [device_key_record(row, _utc) for row in rows]

    # Token ids ---------------------------------------------------------------------------

    async def consume_token_id(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        _aware(now)
        row = await self._fetchone(
            "INSERT INTO consumed_tokens (jti, expires_at) VALUES (%s, %s) "
            "ON CONFLICT (jti) DO NOTHING RETURNING jti",
            (jti, _aware(expires_at)),
        )
        return row is not None

    # Signing keys ------------------------------------------------------------------------

    async def add_signing_key(self, record: SigningKeyRecord) -> None:
        try:
            await self._rowcount(
                "INSERT INTO signing_keys (kid, private_key_pem, created_at, retired_at) "
                "VALUES (%s, %s, %s, %s)",
                signing_key_params(record, _aware),
            )
        except pg_errors.UniqueViolation as exc:
            raise ValueError(f"signing key {record.kid!r} already exists") from exc

    async def retire_signing_key(self, kid: str, now: datetime) -> bool:
        count = await self._rowcount(
            "UPDATE signing_keys SET retired_at = coalesce(retired_at, %s) WHERE kid = %s",
            (_aware(now), kid),
        )
        return count == 1

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        rows = await self._fetchall(SELECT_SIGNING_KEYS + " ORDER BY created_at DESC, seq DESC")
        return [signing_key_record(row, _utc) for row in rows]

    async def delete_signing_key(self, kid: str) -> bool:
        return await self._rowcount("DELETE FROM signing_keys WHERE kid = %s", (kid,)) == 1

    # Debug tokens ------------------------------------------------------------------------

    async def add_debug_token(self, record: DebugTokenRecord) -> None:
        try:
            await self._rowcount(
                "INSERT INTO debug_tokens "
                "(token_id, app_id, name, secret_hash, created_at, revoked_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                debug_token_params(record, _aware),
            )
        except pg_errors.UniqueViolation as exc:
            raise ValueError("a debug token with this id or secret already exists") from exc

    async def find_debug_token(self, secret_hash: bytes) -> DebugTokenRecord | None:
        row = await self._fetchone(SELECT_DEBUG_TOKENS + " WHERE secret_hash = %s", (secret_hash,))
        return None if row is None else debug_token_record(row, _utc)

    async def list_debug_tokens(self, app_id: str | None = None) -> list[DebugTokenRecord]:
        if app_id is None:
            rows = await self._fetchall(SELECT_DEBUG_TOKENS + " ORDER BY created_at DESC, seq DESC")
        else:
            rows = await self._fetchall(
                SELECT_DEBUG_TOKENS + " WHERE app_id = %s ORDER BY created_at DESC, seq DESC",
                (app_id,),
            )
        return [debug_token_record(row, _utc) for row in rows]

    async def revoke_debug_token(self, token_id: str, now: datetime) -> bool:
        count = await self._rowcount(
            "UPDATE debug_tokens SET revoked_at = coalesce(revoked_at, %s) WHERE token_id = %s",
            (_aware(now), token_id),
        )
        return count == 1

    # Rate limits -------------------------------------------------------------------------

    async def hit_rate_limit(
        self, bucket: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitResult:
        start, retry_after = fixed_window(now, window_seconds)
        # One upsert: a newer window resets the count, the same (or an older, lagging) one adds.
        row = await self._fetchone(
            "INSERT INTO rate_limits AS r (bucket, window_seconds, window_start, hits) "
            "VALUES (%s, %s, %s, 1) ON CONFLICT (bucket, window_seconds) DO UPDATE SET "
            "hits = CASE WHEN excluded.window_start > r.window_start THEN 1 ELSE r.hits + 1 END, "
            "window_start = greatest(r.window_start, excluded.window_start) "
            "RETURNING hits",
            (bucket, window_seconds, start),
        )
        hits = 1 if row is None else int(row[0])
        return RateLimitResult(allowed=hits <= limit, retry_after_seconds=retry_after)

    # Housekeeping ------------------------------------------------------------------------

    async def purge_expired(self, now: datetime) -> int:
        now_us = to_micros(now)
        async with self._connection() as conn, conn.transaction():
            gone = 0
            cursor = await conn.execute("DELETE FROM challenges WHERE expires_at <= %s", (now,))
            gone += cursor.rowcount
            cursor = await conn.execute(
                "DELETE FROM consumed_tokens WHERE expires_at <= %s", (now,)
            )
            gone += cursor.rowcount
            # Ended windows carry no information; they are not counted.
            await conn.execute(
                "DELETE FROM rate_limits "
                "WHERE window_start + window_seconds * 1000000::bigint <= %s",
                (now_us,),
            )
        return gone
