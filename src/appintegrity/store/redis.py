"""The Redis store: hot, short-lived state shared by instances (``redis.asyncio``).

Used for challenges, consumed token ids and rate limits behind PostgreSQL (the composite
store), or for everything where durability is not needed.

Guarantees:

* **Atomicity across instances.** Each operation is one Lua script or one command, which Redis
  runs without interleaving: consuming a challenge marks it used in the same script that reads
  it; token ids are ``SET NX``; rate limits are ``INCR`` + ``PEXPIRE`` in one script (fixed
  window, one key per window); counters advance in a compare-and-set script.
* **Expiry.** Challenges are kept until ``CHALLENGE_RETENTION`` after their expiry, so a late
  one is reported ``EXPIRED`` (and a used one ``CONSUMED``) rather than ``UNKNOWN``; token ids
  until their token expires; windows until they end. Redis deletes them itself, so
  ``purge_expired`` has nothing to do and returns 0.
* **Durability: only what the Redis server gives.** With the default snapshotting an
  acknowledged key registration can be lost in a crash; use ``appendonly yes`` with
  ``appendfsync always`` if Redis alone holds device keys, or PostgreSQL for durable state.
* **Failure.** Connection errors and timeouts raise ``StoreUnavailableError``; the client
  reconnects on the next call, so the store recovers when Redis is back. So do error replies
  by which the server refuses to serve (out of memory, ``MISCONF``, ``READONLY``, ``LOADING``,
  ``BUSY``, ``MASTERDOWN``, ``NOREPLICAS``, ``CLUSTERDOWN``), naming only the error; any other
  error reply is a bug and propagates as redis-py raised it.

URL: ``redis://host:port/db?prefix=name&timeout=2&max_connections=100`` — every key starts
with ``prefix`` (default ``appintegrity:``); ``timeout`` is the socket timeout in seconds
(default 2); ``max_connections`` caps the store's connections (default 100): commands beyond it
wait up to ``timeout`` for a free one, then raise ``StoreUnavailableError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    from_micros,
    receipt_updated_at,
    to_micros,
)

__all__ = ["CHALLENGE_RETENTION", "LAYOUT_VERSION", "RedisStore"]

# 1: the first layout. 2: a sorted set per app of receipts scored by ``receipt_updated_at``.
LAYOUT_VERSION = 2

CHALLENGE_RETENTION = timedelta(minutes=15)

# Connections one store opens at most (``?max_connections=``); more commands in flight queue.
DEFAULT_MAX_CONNECTIONS = 100

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Error replies by which the server refuses every command of a kind, whatever its arguments: out
# of memory, writes refused after a failed save (MISCONF) or on a replica, still loading, a
# script running too long, no primary or too few replicas, a cluster down. Any other error reply
# (wrong arguments, a wrong type, a script's own error) is a bug here and stays one.
_SERVER_STATE_CODES = frozenset(
    {"OOM", "MISCONF", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN"}
)
_SERVER_STATE_CLASSES: tuple[tuple[type[RedisError], str], ...] = (
    (OutOfMemoryError, "OOM"),
    (BusyLoadingError, "LOADING"),
    (ReadOnlyError, "READONLY"),
    (ClusterDownError, "CLUSTERDOWN"),  # MasterDownError is one too; its status code says so
)


def _server_state_code(exc: RedisError) -> str | None:
    """The reply's error code when it is one of ``_SERVER_STATE_CODES``, else None."""
    code = getattr(exc, "status_code", None)  # redis-py 8 keeps the reply's first word
    if code is None:
        for cls, cls_code in _SERVER_STATE_CLASSES:
            if isinstance(exc, cls):
                return cls_code
        # Older redis-py: an error it has no class for keeps its code at the message's start.
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        code = message.split(" ", 1)[0]
    return code if code in _SERVER_STATE_CODES else None


def _unavailable(exc: BaseException) -> StoreUnavailableError | None:
    """The ``StoreUnavailableError`` for an exception that means Redis cannot serve, else None.

    The message names the error's class and code only: redis-py quotes a pipeline's failed
    command, with its key and arguments (a challenge, a token id), in its own message.
    """
    if isinstance(exc, RedisError):
        code = _server_state_code(exc)
        if code is not None:
            return StoreUnavailableError(f"Redis cannot serve: {code} ({type(exc).__name__})")
    if isinstance(exc, _UNREACHABLE):
        return StoreUnavailableError(f"Redis unavailable: {type(exc).__name__}")
    return None


# KEYS[1] challenge hash; ARGV[1] now (µs). Returns nil (unknown) or
# {won (1/0), purpose, has_key_id, key_id, created µs, expires µs}.
_CONSUME_CHALLENGE = """
local r = redis.call('HMGET', KEYS[1], 'p', 'k', 'c', 'e', 'u')
if not r[4] then return false end
local won = 0
if not r[5] then
  redis.call('HSET', KEYS[1], 'u', ARGV[1])
  won = 1
end
local has_key = 1
if not r[2] then has_key = 0 end
return {won, r[1], has_key, r[2] or '', r[3], r[4]}
"""

# KEYS[1] key hash, KEYS[2] index of all keys, KEYS[3] index of the app's keys, KEYS[4] the
# app's receipts by refresh time; ARGV[1] created µs (score), ARGV[2] key id, ARGV[3] receipt
# updated µs or '' (no receipt, or revoked), ARGV[4..] field/value pairs.
_ADD_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
return 1
"""

# KEYS[1] key hash, KEYS[2] the app's receipts by refresh time; ARGV[1] now µs, ARGV[2] key id.
# A revoked key leaves the refresh index; the first revocation time is kept.
_REVOKE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'rev', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1] key hash; ARGV[1] new counter, ARGV[2] now µs.
_ADVANCE_COUNTER = """
local r = redis.call('HMGET', KEYS[1], 'ctr', 'rev')
if not r[1] or r[2] then return 0 end
if tonumber(r[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ctr', ARGV[1], 'seen', ARGV[2])
return 1
"""

# KEYS[1] a hash; ARGV[1] field, ARGV[2] value. Set the field once, if the hash exists.
_SET_ONCE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] key hash, KEYS[2] the app's receipts by refresh time; ARGV[1] receipt, ARGV[2] risk
# metric or '' for none, ARGV[3] now µs, ARGV[4] key id.
_UPDATE_RECEIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'rcpt', ARGV[1], 'ru', ARGV[3])
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'risk')
else redis.call('HSET', KEYS[1], 'risk', ARGV[2]) end
if redis.call('HEXISTS', KEYS[1], 'rev') == 0 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
return 1
"""

# KEYS[1] key hash, KEYS[2] the app's receipts by refresh time; ARGV[1] receipt expected,
# ARGV[2] now µs, ARGV[3] key id. Only while that receipt is stored and the key not revoked.
_MARK_RECEIPT_CHECKED = """
local r = redis.call('HMGET', KEYS[1], 'rcpt', 'rev')
if not r[1] or r[2] or r[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'ru', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# Layout 2 (migrate): KEYS[1] key hash, KEYS[2] the app's receipts by refresh time; ARGV[1] key
# id. A key stored by layout 1 gets 'ru' = its creation time and joins the index; idempotent.
_INDEX_RECEIPT = """
if redis.call('HEXISTS', KEYS[1], 'rcpt') == 0 then return 0 end
local ru = redis.call('HGET', KEYS[1], 'ru')
if not ru then
  ru = redis.call('HGET', KEYS[1], 'c')
  redis.call('HSET', KEYS[1], 'ru', ru)
end
if redis.call('HEXISTS', KEYS[1], 'rev') == 0 then redis.call('ZADD', KEYS[2], ru, ARGV[1]) end
return 1
"""

# KEYS[1] record hash, KEYS[2] index set, KEYS[3] sequence counter, KEYS[4] optional unique
# lookup key; ARGV[1] member id, ARGV[2..] field/value pairs. Refuses duplicates.
_ADD_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[1]) end
return 1
"""

# KEYS[1] record hash, KEYS[2] index set; ARGV[1] member id.
_DELETE_RECORD = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1] window counter; ARGV[1] time to live (ms). Fixed window: one key per window.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _bytes(value: object) -> bytes:
    """Replies are bytes (no ``decode_responses``); anything else is a bug, not bad input."""
    if not isinstance(value, bytes):
        raise TypeError(f"unexpected Redis reply type {type(value).__name__}")
    return value


def _text(value: object) -> str:
    return _bytes(value).decode()


def _fields(reply: Mapping[Any, Any]) -> dict[bytes, bytes]:
    return {_bytes(name): _bytes(value) for name, value in reply.items()}


def _opt_micros_text(fields: Mapping[bytes, bytes], name: bytes) -> datetime | None:
    value = fields.get(name)
    return None if value is None else from_micros(int(value))


class RedisStore:
    """``Store`` on Redis; see the module docstring for what it does and does not promise."""

    def __init__(self, client: aioredis.Redis, prefix: str = "appintegrity:") -> None:
        self._client = client
        self.prefix = prefix
        self._consume = client.register_script(_CONSUME_CHALLENGE)
        self._add_key = client.register_script(_ADD_KEY)
        self._advance = client.register_script(_ADVANCE_COUNTER)
        self._set_once = client.register_script(_SET_ONCE_IF_EXISTS)
        self._update_receipt = client.register_script(_UPDATE_RECEIPT)
        self._revoke_key = client.register_script(_REVOKE_KEY)
        self._mark_checked = client.register_script(_MARK_RECEIPT_CHECKED)
        self._index_receipt = client.register_script(_INDEX_RECEIPT)
        self._add_record = client.register_script(_ADD_RECORD)
        self._delete_record = client.register_script(_DELETE_RECORD)
        self._hit = client.register_script(_HIT)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        parts = urlsplit(url)
        prefix = "appintegrity:"
        timeout = 2.0
        max_connections = DEFAULT_MAX_CONNECTIONS
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                prefix = value
            elif name == "timeout":
                try:
                    timeout = float(value)
                except ValueError as exc:
                    raise ConfigError(f"invalid Redis timeout {value!r}") from exc
            elif name == "max_connections":
                try:
                    max_connections = int(value)
                except ValueError:
                    max_connections = 0
                if max_connections < 1:
                    raise ConfigError(
                        f"invalid Redis max_connections {value!r}: a whole number, at least 1"
                    )
            else:
                theirs.append((name, value))
        # Blocking: a burst beyond max_connections waits for a free connection (at most the
        # socket timeout, then StoreUnavailableError) instead of failing at once.
        pool = aioredis.BlockingConnectionPool.from_url(
            urlunsplit(parts._replace(query=urlencode(theirs))),
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry replaces a connection Redis closed while idle (a restart);
            # a second failure is reported, not retried with growing back-off.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(aioredis.Redis.from_pool(pool), prefix)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    # Plumbing ----------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            if isinstance(exc, RedisError) and _server_state_code(exc) is not None:
                # Not chained: a logger printing the cause would print the quoted command.
                raise unavailable from None
            raise unavailable from exc

    async def _script_int(self, script: Any, keys: list[str], args: list[Any]) -> int:
        async with self._guard():
            result = await script(keys=keys, args=args)
        return int(result)

    # Lifecycle ---------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring data of older layouts up to ``LAYOUT_VERSION``; record it. Idempotent, and safe
        when instances run it together (each step is an idempotent per-key script)."""
        async with self._guard():
            stored = await self._client.get(self._k("schema_version"))
        version = 0 if stored is None else int(stored)
        if version < 2:
            # Layout 2: the per-app index of receipts by refresh time.
            async with self._guard():
                async for member, _score in self._client.zscan_iter(self._k("keys"), count=500):
                    key_id = _text(member)
                    app = await self._client.hget(self._k("k", key_id), "app")
                    if app is None:
                        continue
                    await self._index_receipt(
                        keys=[self._k("k", key_id), self._k("receipts-due", _text(app))],
                        args=[key_id],
                    )
        if version < LAYOUT_VERSION:
            async with self._guard():
                await self._client.set(self._k("schema_version"), LAYOUT_VERSION)

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        async with self._guard():
            await self._client.ping()

    # Challenges --------------------------------------------------------------------------

    async def add_challenge(self, record: ChallengeRecord) -> None:
        fields: list[str | int] = [
            "p", record.purpose,
            "c", to_micros(record.created_at),
            "e", to_micros(record.expires_at),
        ]  # fmt: skip
        if record.key_id is not None:
            fields += ["k", record.key_id]
        key = self._k("c", record.value)
        keep_until_ms = to_micros(record.expires_at + CHALLENGE_RETENTION) // 1000
        async with self._guard():
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, items=fields)
            pipe.pexpireat(key, keep_until_ms)
            await pipe.execute()

    async def consume_challenge(self, value: str, now: datetime) -> ConsumedChallenge:
        now_us = to_micros(now)
        async with self._guard():
            result = await self._consume(keys=[self._k("c", value)], args=[now_us])
        if result is None:
            return ConsumedChallenge(ChallengeOutcome.UNKNOWN, None)
        won, purpose, has_key_id, key_id, created, expires = result
        record = ChallengeRecord(
            value=value,
            purpose=_text(purpose),
            key_id=_text(key_id) if has_key_id else None,
            created_at=from_micros(int(created)),
            expires_at=from_micros(int(expires)),
        )
        if not won:
            return ConsumedChallenge(ChallengeOutcome.CONSUMED, record)
        if now_us >= int(expires):
            return ConsumedChallenge(ChallengeOutcome.EXPIRED, record)
        return ConsumedChallenge(ChallengeOutcome.OK, record)

    # Device keys -------------------------------------------------------------------------

    async def add_key(self, key: DeviceKey) -> bool:
        fields: list[str | bytes | int] = [
            "app", key.app_id,
            "plat", key.platform,
            "pub", key.public_key,
            "ctr", key.counter,
            "env", key.environment,
            "c", to_micros(key.created_at),
            "seen", to_micros(key.last_seen_at),
        ]  # fmt: skip
        if key.receipt is not None:
            fields += ["rcpt", key.receipt]
        if key.risk_metric is not None:
            fields += ["risk", key.risk_metric]
        if key.revoked_at is not None:
            fields += ["rev", to_micros(key.revoked_at)]
        updated = receipt_updated_at(key)
        due: int | str = ""
        if updated is not None:
            fields += ["ru", to_micros(updated)]
            if key.revoked_at is None:
                due = to_micros(updated)
        created = to_micros(key.created_at)
        keys = [
            self._k("k", key.key_id),
            self._k("keys"),
            self._k("keys-by-app", key.app_id),
            self._k("receipts-due", key.app_id),
        ]
        args = [created, key.key_id, due, *fields]
        return await self._script_int(self._add_key, keys, args) == 1

    def _device_key(self, key_id: str, fields: Mapping[bytes, bytes]) -> DeviceKey:
        risk = fields.get(b"risk")
        return DeviceKey(
            key_id=key_id,
            app_id=_text(fields[b"app"]),
            platform=_text(fields[b"plat"]),
            public_key=fields[b"pub"],
            counter=int(fields[b"ctr"]),
            environment=_text(fields[b"env"]),
            receipt=fields.get(b"rcpt"),
            risk_metric=None if risk is None else int(risk),
            created_at=from_micros(int(fields[b"c"])),
            last_seen_at=from_micros(int(fields[b"seen"])),
            revoked_at=_opt_micros_text(fields, b"rev"),
            receipt_updated_at=_opt_micros_text(fields, b"ru"),
        )

    async def _app_of(self, key_id: str) -> str | None:
        """A key's app id (it never changes, so reading it before a script is race-free)."""
        async with self._guard():
            app = await self._client.hget(self._k("k", key_id), "app")
        return None if app is None else _text(app)

    async def get_key(self, key_id: str) -> DeviceKey | None:
        async with self._guard():
            fields = _fields(await self._client.hgetall(self._k("k", key_id)))
        return self._device_key(key_id, fields) if fields else None

    async def advance_counter(self, key_id: str, counter: int, now: datetime) -> bool:
        args = [counter, to_micros(now)]
        return await self._script_int(self._advance, [self._k("k", key_id)], args) == 1

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        args = [to_micros(now), key_id]
        app = await self._app_of(key_id)
        if app is None:
            return False
        keys = [self._k("k", key_id), self._k("receipts-due", app)]
        return await self._script_int(self._revoke_key, keys, args) == 1

    async def list_keys(self, app_id: str | None = None, limit: int = 1000) -> list[DeviceKey]:
        check_list_limit(limit)
        index = self._k("keys") if app_id is None else self._k("keys-by-app", app_id)
        async with self._guard():
            members = await self._client.zrevrange(index, 0, limit - 1)
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self._k("k", _text(member)))
            rows = await pipe.execute()
        return [
            self._device_key(_text(member), _fields(fields))
            for member, fields in zip(members, rows, strict=True)
            if fields
        ]

    async def update_receipt(
        self,
        key_id: str,
        receipt: bytes,
        risk_metric: int | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        at = to_micros(now or datetime.now(UTC))
        app = await self._app_of(key_id)
        if app is None:
            return False
        args: list[Any] = [receipt, "" if risk_metric is None else risk_metric, at, key_id]
        keys = [self._k("k", key_id), self._k("receipts-due", app)]
        return await self._script_int(self._update_receipt, keys, args) == 1

    async def mark_receipt_checked(self, key_id: str, receipt: bytes, now: datetime) -> bool:
        args: list[Any] = [receipt, to_micros(now), key_id]
        app = await self._app_of(key_id)
        if app is None:
            return False
        keys = [self._k("k", key_id), self._k("receipts-due", app)]
        return await self._script_int(self._mark_checked, keys, args) == 1

    async def keys_due_for_receipt_refresh(
        self, app_id: str, before: datetime, limit: int
    ) -> list[DeviceKey]:
        if limit <= 0:
            return []
        # Scores are µs since the epoch: exact in a double until the year 2255.
        bound = f"({to_micros(before)}"
        async with self._guard():
            members = await self._client.zrangebyscore(
                self._k("receipts-due", app_id), "-inf", bound, start=0, num=limit
            )
            pipe = self._client.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self._k("k", _text(member)))
            rows = await pipe.execute()
        keys = [
            self._device_key(_text(member), _fields(fields))
            for member, fields in zip(members, rows, strict=True)
            if fields
        ]
        return [k for k in keys if k.receipt is not None and k.revoked_at is None]

    # Token ids ---------------------------------------------------------------------------

    async def consume_token_id(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        ttl_ms = max(1, (to_micros(expires_at) - to_micros(now)) // 1000)
        async with self._guard():
            created = await self._client.set(self._k("t", jti), 1, nx=True, px=ttl_ms)
        return bool(created)

    # Signing keys ------------------------------------------------------------------------

    async def add_signing_key(self, record: SigningKeyRecord) -> None:
        fields: list[Any] = ["pem", record.private_key_pem, "c", to_micros(record.created_at)]
        if record.retired_at is not None:
            fields += ["ret", to_micros(record.retired_at)]
        keys = [self._k("sk", record.kid), self._k("signing-keys"), self._k("seq")]
        if await self._script_int(self._add_record, keys, [record.kid, *fields]) != 1:
            raise ValueError(f"signing key {record.kid!r} already exists")

    async def retire_signing_key(self, kid: str, now: datetime) -> bool:
        args = ["ret", to_micros(now)]
        return await self._script_int(self._set_once, [self._k("sk", kid)], args) == 1

    async def _records(self, index: str, kind: str) -> list[tuple[str, dict[bytes, bytes]]]:
        """All records in an index set, newest first (creation time, then insertion order)."""
        async with self._guard():
            members = await self._client.smembers(index)
            ids = sorted(_text(m) for m in members)
            pipe = self._client.pipeline(transaction=False)
            for member in ids:
                pipe.hgetall(self._k(kind, member))
            rows = await pipe.execute()
        found = [
            (member, _fields(fields)) for member, fields in zip(ids, rows, strict=True) if fields
        ]
        found.sort(key=lambda item: (int(item[1][b"c"]), int(item[1][b"seq"])), reverse=True)
        return found

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        return [
            SigningKeyRecord(
                kid=kid,
                private_key_pem=fields[b"pem"],
                created_at=from_micros(int(fields[b"c"])),
                retired_at=_opt_micros_text(fields, b"ret"),
            )
            for kid, fields in await self._records(self._k("signing-keys"), "sk")
        ]

    async def delete_signing_key(self, kid: str) -> bool:
        keys = [self._k("sk", kid), self._k("signing-keys")]
        return await self._script_int(self._delete_record, keys, [kid]) == 1

    # Debug tokens ------------------------------------------------------------------------

    async def add_debug_token(self, record: DebugTokenRecord) -> None:
        fields: list[Any] = [
            "app", record.app_id,
            "name", record.name,
            "hash", record.secret_hash,
            "c", to_micros(record.created_at),
        ]  # fmt: skip
        if record.revoked_at is not None:
            fields += ["rev", to_micros(record.revoked_at)]
        keys = [
            self._k("dt", record.token_id),
            self._k("debug-tokens"),
            self._k("seq"),
            self._k("dt-by-hash", record.secret_hash.hex()),
        ]
        if await self._script_int(self._add_record, keys, [record.token_id, *fields]) != 1:
            raise ValueError("a debug token with this id or secret already exists")

    @staticmethod
    def _debug_token(token_id: str, fields: Mapping[bytes, bytes]) -> DebugTokenRecord:
        return DebugTokenRecord(
            token_id=token_id,
            app_id=_text(fields[b"app"]),
            name=_text(fields[b"name"]),
            secret_hash=fields[b"hash"],
            created_at=from_micros(int(fields[b"c"])),
            revoked_at=_opt_micros_text(fields, b"rev"),
        )

    async def find_debug_token(self, secret_hash: bytes) -> DebugTokenRecord | None:
        async with self._guard():
            token_id = await self._client.get(self._k("dt-by-hash", secret_hash.hex()))
            if token_id is None:
                return None
            fields = _fields(await self._client.hgetall(self._k("dt", _text(token_id))))
        return self._debug_token(_text(token_id), fields) if fields else None

    async def list_debug_tokens(self, app_id: str | None = None) -> list[DebugTokenRecord]:
        tokens = [
            self._debug_token(token_id, fields)
            for token_id, fields in await self._records(self._k("debug-tokens"), "dt")
        ]
        return [t for t in tokens if app_id is None or t.app_id == app_id]

    async def revoke_debug_token(self, token_id: str, now: datetime) -> bool:
        args = ["rev", to_micros(now)]
        return await self._script_int(self._set_once, [self._k("dt", token_id)], args) == 1

    # Rate limits -------------------------------------------------------------------------

    async def hit_rate_limit(
        self, bucket: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitResult:
        start, retry_after = fixed_window(now, window_seconds)
        key = self._k("rl", str(window_seconds), str(start), bucket)
        # Keep the counter a little past the window's end so late clocks still see it.
        ttl_ms = (retry_after + 1) * 1000
        hits = await self._script_int(self._hit, [key], [ttl_ms])
        return RateLimitResult(allowed=hits <= limit, retry_after_seconds=retry_after)

    # Housekeeping ------------------------------------------------------------------------

    async def purge_expired(self, now: datetime) -> int:
        """Redis expires challenges, token ids and windows by itself: nothing to delete."""
        to_micros(now)
        return 0
