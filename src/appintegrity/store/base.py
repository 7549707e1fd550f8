"""The store interface: every operation that must be atomic is one method here.

The service never sees SQL or Redis commands; it calls these methods, and each
implementation (SQLite, PostgreSQL, Redis, PostgreSQL + Redis) guarantees the
atomicity its docstring promises, across processes and instances sharing the store.
An implementation that cannot reach its backend raises ``StoreUnavailableError``
so the service fails closed (503), never open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from appintegrity.apple.attestation import AttestedKey


class ChallengeOutcome(StrEnum):
    """Result of trying to consume a challenge."""

    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    CONSUMED = "consumed"


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """A one-time challenge the service issued."""

    value: str  # base64url text as sent to the app
    purpose: str  # "attestation" | "assertion" | "any"
    key_id: str | None  # standard base64 key id it is bound to, if any
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ConsumedChallenge:
    """What ``consume_challenge`` returns: the outcome, and the record when there is one."""

    outcome: ChallengeOutcome
    record: ChallengeRecord | None


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A registered device key (App Attest key; counter 0 at registration).

    ``receipt_updated_at`` is when the stored receipt was last stored or confirmed current by
    Apple; ``add_key`` sets it to ``created_at`` when the key comes with a receipt and none is
    given, and it is None exactly when there is no receipt.
    """

    key_id: str  # standard base64 of the 32-byte key id (canonical spelling)
    app_id: str
    platform: str  # "ios"
    public_key: bytes  # uncompressed P-256 point, 65 bytes
    counter: int
    environment: str  # "production" | "development"
    receipt: bytes | None
    risk_metric: int | None
    created_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None = None
    receipt_updated_at: datetime | None = None

    @classmethod
    def registered(
        cls,
        attested: AttestedKey,
        now: datetime,
        *,
        receipt: bytes | None,
        risk_metric: int | None,
    ) -> DeviceKey:
        """The record of a key that has just passed attestation: under its canonical id, with
        counter 0 and what Apple's steps found (the service and inline mode both store this)."""
        return cls(
            key_id=attested.key_id_b64,
            app_id=attested.app_id,
            platform="ios",
            public_key=attested.public_key,
            counter=0,
            environment=str(attested.environment),
            receipt=receipt,
            risk_metric=risk_metric,
            created_at=now,
            last_seen_at=now,
        )


def receipt_updated_at(key: DeviceKey) -> datetime | None:
    """The ``receipt_updated_at`` that ``add_key`` stores for ``key`` (see ``DeviceKey``)."""
    if key.receipt is None:
        return None
    return key.receipt_updated_at or key.created_at


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """An app-token signing key. The newest non-retired key signs; all unexpired ones verify."""

    kid: str
    private_key_pem: bytes  # PKCS#8 PEM, P-256
    created_at: datetime
    retired_at: datetime | None = None  # set on rotation; still published until retired + max TTL


@dataclass(frozen=True, slots=True)
class DebugTokenRecord:
    """A debug token: a secret a simulator or CI exchanges for an app token marked ``debug``."""

    token_id: str  # public identifier, shown in lists
    app_id: str
    name: str
    secret_hash: bytes  # SHA-256 of the secret; the secret itself is never stored
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """Result of counting one hit against a fixed window."""

    allowed: bool
    retry_after_seconds: int


class Store(Protocol):
    """Everything the service keeps. All methods are safe to call concurrently."""

    async def migrate(self) -> None:
        """Create or upgrade the schema; idempotent."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` if the backend cannot be reached."""

    # Challenges -------------------------------------------------------------------------
    async def add_challenge(self, record: ChallengeRecord) -> None:
        """Store a freshly issued challenge."""

    async def consume_challenge(self, value: str, now: datetime) -> ConsumedChallenge:
        """Atomically mark a challenge used. Exactly one of concurrent callers gets ``OK``.

        ``EXPIRED`` when it is past ``expires_at`` (it is consumed all the same),
        ``CONSUMED`` when it was used before (remembered at least until it expires),
        ``UNKNOWN`` when it was never issued or has been purged.
        """
        ...

    # Device keys ------------------------------------------------------------------------
    async def add_key(self, key: DeviceKey) -> bool:
        """Insert the key if no key with this id exists. Returns False if one did.

        Returns only after the key is durable: an acknowledged registration survives a crash.
        """
        ...

    async def get_key(self, key_id: str) -> DeviceKey | None:
        """The key with this canonical id, revoked or not."""
        ...

    async def advance_counter(self, key_id: str, counter: int, now: datetime) -> bool:
        """Set the counter to ``counter`` only if it is above the stored one (and the key is
        not revoked); update ``last_seen_at``. True if it moved. Never moves backwards."""
        ...

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        """Mark a key revoked. False if there is no such key."""
        ...

    async def list_keys(self, app_id: str | None = None, limit: int = 1000) -> list[DeviceKey]:
        """Keys, newest first, at most ``limit``; ``ValueError`` if ``limit`` is below 1."""
        ...

    async def update_receipt(
        self,
        key_id: str,
        receipt: bytes,
        risk_metric: int | None,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Replace a key's receipt after a refresh with Apple; ``receipt_updated_at`` becomes
        ``now`` (default: the wall clock). False if there is no such key."""
        ...

    async def mark_receipt_checked(self, key_id: str, receipt: bytes, now: datetime) -> bool:
        """Set ``receipt_updated_at`` to ``now`` if the key's stored receipt is still
        ``receipt`` and the key is not revoked: Apple had nothing newer for it (304, 404), so it
        is not due again for a full interval. The comparison makes a racing refresh that stored
        a newer receipt win: the newer receipt is never replaced by the older one."""
        ...

    async def keys_due_for_receipt_refresh(
        self, app_id: str, before: datetime, limit: int
    ) -> list[DeviceKey]:
        """Non-revoked keys of ``app_id`` with a receipt last updated before ``before``, oldest
        ``receipt_updated_at`` first, at most ``limit``. Served by an index: cost follows
        ``limit``, not the number of keys the app has."""
        ...

    # Token ids (limited-use app tokens) --------------------------------------------------
    async def consume_token_id(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        """Record a token id as used; True for exactly one caller. Remembered until expiry."""
        ...

    # Signing keys -----------------------------------------------------------------------
    async def add_signing_key(self, record: SigningKeyRecord) -> None:
        """Store a new signing key (it becomes the active one: newest non-retired)."""

    async def retire_signing_key(self, kid: str, now: datetime) -> bool:
        """Stop signing with a key; it keeps verifying until its tokens expire."""
        ...

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        """All signing keys, newest first."""
        ...

    async def delete_signing_key(self, kid: str) -> bool:
        """Forget a retired key whose tokens have all expired."""
        ...

    # Debug tokens -----------------------------------------------------------------------
    async def add_debug_token(self, record: DebugTokenRecord) -> None:
        """Store a debug token record."""

    async def find_debug_token(self, secret_hash: bytes) -> DebugTokenRecord | None:
        """The debug token whose secret hashes to ``secret_hash``, revoked or not."""
        ...

    async def list_debug_tokens(self, app_id: str | None = None) -> list[DebugTokenRecord]:
        """Debug tokens, newest first."""
        ...

    async def revoke_debug_token(self, token_id: str, now: datetime) -> bool:
        """Revoke a debug token. False if there is no such token."""
        ...

    # Rate limits ------------------------------------------------------------------------
    async def hit_rate_limit(
        self, bucket: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitResult:
        """Count one hit in ``bucket`` for the current fixed window; atomic across instances."""
        ...

    # Housekeeping -----------------------------------------------------------------------
    async def purge_expired(self, now: datetime) -> int:
        """Delete expired challenges and token ids; returns how many rows went."""
        ...


# Helpers for implementations ----------------------------------------------------------------
# Backends without a native time type keep instants as integer microseconds since the Unix
# epoch (UTC): exact, comparable in SQL/Lua, and free of time-zone ambiguity.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch. Refuses naive datetimes: their zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("store times must be timezone-aware (UTC)")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime for ``to_micros``'s value."""
    return _EPOCH + timedelta(microseconds=micros)


def check_list_limit(limit: int) -> None:
    """Every backend refuses the same limits for ``list_keys`` (SQL and Redis differ on 0)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def fixed_window(now: datetime, window_seconds: int) -> tuple[int, int]:
    """(window start in µs, seconds until it ends, at least 1) for a fixed-window rate limit."""
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    now_us = to_micros(now)
    window_us = window_seconds * 1_000_000
    start = now_us - now_us % window_us
    remaining_us = start + window_us - now_us
    return start, max(1, -(-remaining_us // 1_000_000))
