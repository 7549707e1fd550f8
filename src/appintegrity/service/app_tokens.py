"""App-token signing keys as the service sees them: loaded from the store, refreshed, rotated.

The store is the single source of truth, so several instances agree without talking to each
other: each reloads the key list every ``key_refresh_seconds``. The newest key that is not
retired signs; every key not yet deleted is published in the JWKS, and a retired key is
deleted once every token it could have signed has expired (retired + max TTL + leeway).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import AppIntegrityError, StoreUnavailableError
from appintegrity.store.base import SigningKeyRecord, Store
from appintegrity.tokens import (
    AppTokenClaims,
    AppTokenVerifier,
    SigningKey,
    StaticJwks,
    TokenError,
    TokenIssuer,
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

    kids: tuple[str, ...]
    active: SigningKey
    issuer: TokenIssuer
    verifier: AppTokenVerifier
    jwks_json: bytes
    records: tuple[SigningKeyRecord, ...]


async def new_signing_key(store: Store, now: datetime) -> SigningKeyRecord:
    """Generate a key, store it (it becomes the active one) and return its record."""
    key = SigningKey.generate()
    record = SigningKeyRecord(kid=key.kid, private_key_pem=key.private_pem(), created_at=now)
    await store.add_signing_key(record)
    return record


async def rotate_signing_key(store: Store, now: datetime) -> SigningKeyRecord:
    """Make a new key the signer and retire the others (they keep verifying).

    The new key is added before the old ones retire, so there is always an active key.
    """
    record = await new_signing_key(store, now)
    for existing in await store.list_signing_keys():
        if existing.kid != record.kid and existing.retired_at is None:
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
    ) -> None:
        self.store = store
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
    def issuer(self) -> TokenIssuer:
        return self.snapshot.issuer

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
        except TokenError:
            kid = _kid_of(token)
            now = asyncio.get_running_loop().time()
            if (
                kid is None
                or kid in self.snapshot.kids
                or now - self._last_unknown_kid_refresh < UNKNOWN_KID_REFRESH_SECONDS
            ):
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
        active = next((r for r in records if r.retired_at is None), None)
        if active is None:
            return False
        kids = tuple(r.kid for r in records)
        current = self._snapshot
        if current is not None and current.kids == kids and current.active.kid == active.kid:
            return True
        keys = {r.kid: self._load(r) for r in records}
        self._loaded = keys
        jwks = build_jwks(keys.values())
        self._snapshot = KeySnapshot(
            kids=kids,
            active=keys[active.kid],
            issuer=TokenIssuer(keys[active.kid], issuer=self.issuer_name, audience=self.audience),
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
        log.info("signing keys loaded: active %s, %d published", active.kid, len(records))
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


def _kid_of(token: str) -> str | None:
    """The ``kid`` of a compact JWS header, or None when it cannot be read."""
    header, _, _ = token.partition(".")
    try:
        parsed = json.loads(b64decode_lenient(header))
    except (EncodingError, ValueError):
        return None
    kid = parsed.get("kid") if isinstance(parsed, dict) else None
    return kid if isinstance(kid, str) else None
