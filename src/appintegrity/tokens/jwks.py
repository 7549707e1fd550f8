"""Where a verifier finds app-token public keys: a JWKS held in memory, a file, or a URL.

Every source answers ``peek`` (no I/O, for cached tokens), ``stale`` (no I/O: are the held
keys due for a refresh?), ``get_key`` (may block on a refresh) and ``get_key_async``
(refreshes without blocking the event loop). A source keeps
the same key object for a ``kid`` across refreshes while the key is unchanged, so a
verifier can tell cheaply that a cached token's key is still published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import ConfigError
from appintegrity.tokens.signing import ALGORITHM
from appintegrity.tokens.verifier import JwksUnavailableError

logger = logging.getLogger("appintegrity.tokens")

PublicKey = ec.EllipticCurvePublicKey
KeySet = dict[str, ec.EllipticCurvePublicKey]


class JwksFormatError(ValueError):
    """A JWKS document (or one of its P-256 keys) is malformed."""


class JwksSource(Protocol):
    """What ``AppTokenVerifier`` needs from a key set."""

    def peek(self, kid: str) -> PublicKey | None:
        """The key currently held for ``kid``; never does I/O."""
        ...

    def stale(self) -> bool:
        """True when the held keys are due for a refresh that ``get_key`` would make even
        for a known ``kid`` (a cache past its lifetime); never does I/O."""
        ...

    def get_key(self, kid: str) -> PublicKey | None:
        """The key for ``kid``, refreshing first when the source allows; None if unknown.

        Raises ``JwksUnavailableError`` when the keys cannot be obtained at all.
        """
        ...

    async def get_key_async(self, kid: str) -> PublicKey | None:
        """As ``get_key``, but a network refresh is awaited instead of blocking."""
        ...


def _coordinate(jwk: Mapping[str, object], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwksFormatError(f"P-256 JWK member {name!r} must be a string")
    try:
        raw = b64decode_lenient(value)
    except EncodingError as exc:
        raise JwksFormatError(f"P-256 JWK member {name!r} is not base64url") from exc
    if len(raw) != 32:
        raise JwksFormatError(f"P-256 JWK member {name!r} must be 32 bytes, found {len(raw)}")
    return int.from_bytes(raw, "big")


def parse_jwks(document: object) -> KeySet:
    """The ES256 signing keys of a JWKS, by ``kid``.

    Keys of other types or uses are skipped (a JWKS may hold them); a P-256 key that is
    malformed, off the curve or without a ``kid`` is an error, as is a repeated ``kid``.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksFormatError("a JWKS is a JSON object with a 'keys' array")
    keys: KeySet = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            raise JwksFormatError("each JWKS entry must be a JSON object")
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JwksFormatError("P-256 JWK without a 'kid'")
        if kid in keys:
            raise JwksFormatError(f"JWKS repeats kid {kid!r}")
        numbers = ec.EllipticCurvePublicNumbers(
            _coordinate(jwk, "x"), _coordinate(jwk, "y"), ec.SECP256R1()
        )
        try:
            keys[kid] = numbers.public_key()
        except ValueError as exc:
            raise JwksFormatError(f"JWK {kid!r} is not a point on P-256") from exc
    return keys


def _merge(old: KeySet, new: KeySet) -> KeySet:
    """Keep the old key object where a kid's key is unchanged (cache hits compare identity)."""
    merged: KeySet = {}
    for kid, key in new.items():
        previous = old.get(kid)
        if previous is not None and previous.public_numbers() == key.public_numbers():
            merged[kid] = previous
        else:
            merged[kid] = key
    return merged


class StaticJwks:
    """A fixed key set, e.g. the service's own keys or a JWKS pasted into configuration."""

    def __init__(self, jwks: Mapping[str, object]) -> None:
        try:
            self._keys = parse_jwks(jwks)
        except JwksFormatError as exc:
            raise ConfigError(f"invalid JWKS: {exc}") from exc

    def peek(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    def stale(self) -> bool:
        return False

    def get_key(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    async def get_key_async(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)


class JwksFile:
    """A JWKS on disk, re-read when it changes (checked every ``reload_interval`` seconds,
    and at once for an unknown ``kid``). A half-written or broken file keeps the old keys."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        reload_interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._clock = clock
        self._lock = threading.Lock()
        try:
            stat = self.path.stat()
            self._keys = parse_jwks(json.loads(self.path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load JWKS file {self.path}: {exc}") from exc
        self._signature = (stat.st_mtime_ns, stat.st_size)
        self._checked_at = clock()

    def peek(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    def stale(self) -> bool:
        return self._clock() - self._checked_at >= self.reload_interval

    def get_key(self, kid: str) -> PublicKey | None:
        key = self._keys.get(kid)
        if key is None or self.stale():
            self._reload_if_changed()
            key = self._keys.get(kid)
        return key

    async def get_key_async(self, kid: str) -> PublicKey | None:
        return self.get_key(kid)

    def _reload_if_changed(self) -> None:
        with self._lock:
            self._checked_at = self._clock()
            try:
                stat = self.path.stat()
                if (stat.st_mtime_ns, stat.st_size) == self._signature:
                    return
                keys = parse_jwks(json.loads(self.path.read_bytes()))
            except (OSError, ValueError) as exc:
                logger.warning("keeping previous JWKS: cannot reload %s: %s", self.path, exc)
                return
            self._keys = _merge(self._keys, keys)
            self._signature = (stat.st_mtime_ns, stat.st_size)


class HttpJwks:
    """The service's ``/.well-known/jwks.json``, fetched with httpx and cached.

    Refreshes when the cache is older than ``cache_ttl`` and when a token names an unknown
    ``kid`` (a rotation) — but at most once per ``min_refresh_interval`` seconds, so a flood
    of tokens with made-up kids cannot hammer the service. A failed refresh keeps serving
    the keys already held; only when no answer can be given is ``JwksUnavailableError`` raised.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh_interval: float = 30.0,
        timeout: float = 5.0,
        cache_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._keys: KeySet = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_failed = False
        self._lock = threading.Lock()
        self._inflight: asyncio.Task[None] | None = None
        self._fetches = 0
        self._refreshing = False

    @property
    def fetch_count(self) -> int:
        """How many fetches were attempted (for tests and metrics)."""
        return self._fetches

    def peek(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    def stale(self) -> bool:
        fetched = self._fetched_at
        if fetched is None:
            return False  # nothing held: every kid misses ``peek`` and fetches anyway
        now = self._clock()
        if now - fetched < self.cache_ttl:
            return False
        attempted = self._attempted_at
        return attempted is None or now - attempted >= self.min_refresh_interval

    def _wants_refresh(self, kid: str) -> bool:
        if self._fetched_at is None or kid not in self._keys:
            attempted = self._attempted_at
            return attempted is None or self._clock() - attempted >= self.min_refresh_interval
        return self.stale()

    def _answer(self, kid: str) -> PublicKey | None:
        key = self._keys.get(kid)
        if key is None and (self._fetched_at is None or self._last_failed):
            # The URL is in the log (``_failed``), not in what a client is told.
            raise JwksUnavailableError("the token signing keys cannot be fetched right now")
        return key

    def get_key(self, kid: str) -> PublicKey | None:
        if self._refreshing or self._wants_refresh(kid):
            # Threads arriving during a fetch wait for it instead of answering from nothing.
            with self._lock:
                if self._wants_refresh(kid):
                    self._refreshing = True
                    try:
                        self._attempted_at = self._clock()
                        self._fetches += 1
                        self._install(self._fetch_sync())
                    finally:
                        self._refreshing = False
        return self._answer(kid)

    async def get_key_async(self, kid: str) -> PublicKey | None:
        loop = asyncio.get_running_loop()
        task = self._inflight
        running = task is not None and not task.done() and task.get_loop() is loop
        if not running and self._wants_refresh(kid):
            # One fetch in flight per loop: concurrent requests with the new kid await it.
            self._attempted_at = self._clock()
            self._fetches += 1
            task = loop.create_task(self._refresh_async())
            self._inflight = task
            running = True
        if running and task is not None:
            await asyncio.shield(task)
        return self._answer(kid)

    async def _refresh_async(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url)
            self._install(self._parse(response))
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)

    def _fetch_sync(self) -> KeySet | None:
        try:
            return self._parse(httpx.get(self.url, timeout=self.timeout))
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)
            return None

    @staticmethod
    def _parse(response: httpx.Response) -> KeySet:
        response.raise_for_status()
        return parse_jwks(json.loads(response.content))

    def _failed(self, exc: Exception) -> None:
        self._last_failed = True
        logger.warning("JWKS refresh from %s failed (keeping cached keys): %s", self.url, exc)

    def _install(self, keys: KeySet | None) -> None:
        if keys is None:
            return
        self._keys = _merge(self._keys, keys)
        self._fetched_at = self._clock()
        self._last_failed = False
