"""App-token signing keys as the service sees them: loaded from the store, refreshed, rotated.

The store is the single source of truth, so several instances agree without talking to each
other: each reloads the key list every ``key_refresh_seconds``. Every key not yet deleted is
published in the JWKS, and a retired key is deleted once every token it could have signed has
expired (retired + max TTL + leeway).

Rotation without downtime across instances: a new key is published for ``publish_delay``
(two refresh intervals by default) before it signs, and the key it replaces keeps signing
until then, so by the time any instance hands out a token naming the new key, every
instance's JWKS — and so every API that fetches it — already carries that key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from appintegrity.errors import AppIntegrityError, StoreUnavailableError
from appintegrity.store.base import SigningKeyRecord, Store
from appintegrity.tokens import (
    AppTokenClaims,
    AppTokenVerifier,
    SigningKey,
    StaticJwks,
    TokenIssuer,
    UnknownKeyError,
    build_jwks,
)

# A token naming a kid this instance has not loaded makes it re-read the store at most this
# often: a key made on another instance (first start, rotation) verifies at once, and a flood
# of made-up kids costs one store read per interval.
UNKNOWN_KID_REFRESH_SECONDS = 1.0

log = logging.getLogger("appintegrity.service")


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One consistent view of the signing keys; swapped whole on refresh."""

    issuers: dict[str, TokenIssuer]
    verifier: AppTokenVerifier
    jwks_json: bytes
    records: tuple[SigningKeyRecord, ...]  # newest first


def choose_signer(
    records: Sequence[SigningKeyRecord], now: datetime, publish_delay: timedelta
) -> SigningKeyRecord | None:
    """The key that signs at ``now`` (``records`` newest first), or None when none may.

    Candidates are the keys not retired, and those retired less than ``publish_delay`` ago
    (they sign while their successor is being published). The newest candidate published
    for ``publish_delay`` signs; when none has been published that long (the first minutes
    of a store), the oldest candidate signs, so instances that raced to create a first key
    agree on one and a fresh rotation still waits.
    """
    candidates = [r for r in records if r.retired_at is None or now - r.retired_at < publish_delay]
    if not any(r.retired_at is None for r in candidates):
        return None
    ready = next((r for r in candidates if now - r.created_at >= publish_delay), None)
    return ready or candidates[-1]


async def new_signing_key(store: Store, now: datetime) -> SigningKeyRecord:
    """Generate a key, store it (it becomes the active one) and return its record."""
    key = SigningKey.generate()
    record = SigningKeyRecord(kid=key.kid, private_key_pem=key.private_pem(), created_at=now)
    await store.add_signing_key(record)
    return record


async def rotate_signing_key(store: Store, now: datetime) -> SigningKeyRecord:
    """Make a new key the signer and retire the older ones (they keep verifying).

    The new key is added before the old ones retire, so there is always an active key. Only
    keys older than the new one (by creation time, then kid) are retired: two rotations at
    once (two instances, or the CLI beside the service) would otherwise retire each other's
    new key and leave none active; this way the newest of them stays.
    """
    record = await new_signing_key(store, now)
    mine = (record.created_at, record.kid)
    for existing in await store.list_signing_keys():
        if existing.retired_at is None and (existing.created_at, existing.kid) < mine:
            await store.retire_signing_key(existing.kid, now)
    return record


class SigningKeys:
    """The signing-key manager of one service instance."""

    def __init__(
        self,
        store: Store,
        *,
        issuer: str,
        audience: str,
        retention: timedelta,
        leeway_seconds: int,
        clock: Callable[[], datetime],
        publish_delay: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.publish_delay = publish_delay
        self.issuer_name = issuer
        self.audience = audience
        self.retention = retention
        self.leeway_seconds = leeway_seconds
        self.clock = clock
        self._loaded: dict[str, SigningKey] = {}
        self._snapshot: KeySnapshot | None = None
        self._last_unknown_kid_refresh = float("-inf")

    @property
    def snapshot(self) -> KeySnapshot:
        if self._snapshot is None:
            raise StoreUnavailableError("signing keys have not been loaded from the store")
        return self._snapshot

    @property
    def active_kid(self) -> str:
        """The kid that signs now (chosen per call: a published key starts signing on time
        even between two refreshes)."""
        snapshot = self.snapshot
        signer = choose_signer(snapshot.records, self.clock(), self.publish_delay)
        return signer.kid if signer is not None else snapshot.records[0].kid

    @property
    def next_kid(self) -> str | None:
        """A key published but not signing yet (right after a rotation), if any."""
        active = self.active_kid
        newest = self.snapshot.records[0]
        if newest.kid != active and newest.retired_at is None:
            return newest.kid
        return None

    @property
    def issuer(self) -> TokenIssuer:
        return self.snapshot.issuers[self.active_kid]

    @property
    def verifier(self) -> AppTokenVerifier:
        return self.snapshot.verifier

    @property
    def jwks_json(self) -> bytes:
        return self.snapshot.jwks_json

    async def verify(self, token: str) -> AppTokenClaims:
        """Verify an app token; a kid not loaded yet triggers one (rate-limited) store re-read."""
        try:
            return self.snapshot.verifier.verify(token)
        except UnknownKeyError:
            now = asyncio.get_running_loop().time()
            if now - self._last_unknown_kid_refresh < UNKNOWN_KID_REFRESH_SECONDS:
                raise
            self._last_unknown_kid_refresh = now
            await self.refresh()
            return self.snapshot.verifier.verify(token)

    async def start(self) -> None:
        """Load the keys; create the first one if the store has no active key."""
        if not await self.refresh():
            await new_signing_key(self.store, self.clock())
            await self.refresh()

    async def rotate(self) -> SigningKeyRecord:
        record = await rotate_signing_key(self.store, self.clock())
        await self.refresh()
        return record

    async def refresh(self) -> bool:
        """Reload from the store; False when there is no active key to sign with."""
        now = self.clock()
        records = []
        for record in await self.store.list_signing_keys():
            if record.retired_at is not None and record.retired_at + self.retention < now:
                await self.store.delete_signing_key(record.kid)
                continue
            records.append(record)
        records.sort(key=lambda r: r.created_at, reverse=True)
        if choose_signer(records, now, self.publish_delay) is None:
            return False
        state = tuple((r.kid, r.retired_at) for r in records)
        current = self._snapshot
        if current is not None and tuple((r.kid, r.retired_at) for r in current.records) == state:
            return True
        keys = {r.kid: self._load(r) for r in records}
        self._loaded = keys
        jwks = build_jwks(keys.values())
        self._snapshot = KeySnapshot(
            issuers={
                kid: TokenIssuer(key, issuer=self.issuer_name, audience=self.audience)
                for kid, key in keys.items()
            },
            verifier=AppTokenVerifier(
                StaticJwks(jwks),
                issuer=self.issuer_name,
                audience=self.audience,
                leeway_seconds=self.leeway_seconds,
                clock=lambda: self.clock().timestamp(),
            ),
            jwks_json=json.dumps(jwks, separators=(",", ":")).encode("ascii"),
            records=tuple(records),
        )
        log.info("signing keys loaded: active %s, %d published", self.active_kid, len(records))
        return True

    def _load(self, record: SigningKeyRecord) -> SigningKey:
        key = self._loaded.get(record.kid)
        if key is None:
            key = SigningKey.from_pem(record.private_key_pem, record.kid)
        return key

    async def run_refresh(self, interval_seconds: float) -> None:
        """Background task: reload every ``interval_seconds`` so rotations elsewhere show up.

        A store outage keeps the last good keys (tokens still verify; the 503s come from the
        operations that need the store).
        """
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                if not await self.refresh():
                    await new_signing_key(self.store, self.clock())
                    await self.refresh()
            except AppIntegrityError as exc:
                log.warning("signing key refresh failed: %s", exc.code)
