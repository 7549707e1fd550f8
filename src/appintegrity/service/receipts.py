"""Receipts and the fraud-risk metric: checked at registration, refreshed with Apple, used to
decide assertions.

An App Attest receipt feeds fraud assessment; it is not part of the attestation verdict. So a
receipt that does not validate is recorded (log, metrics, the registration answer) and refuses
the registration only when the app sets ``require_valid_receipt``. Refreshing trades a stored
receipt for a newer one whose risk metric counts the device's attestations over 30 days; an
assertion from a key whose stored metric exceeds the app's ``max_risk_metric`` is decided
``limit`` or ``block`` with reason ``apple.risk_metric_high``.

The background refresher never touches a request: Apple being slow or down only delays the
next metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from appintegrity.apple.attestation import AttestedKey
from appintegrity.apple.receipt import verify_receipt
from appintegrity.errors import AppIntegrityError, AppleVerificationError, Reason
from appintegrity.service.apps import IosApp
from appintegrity.service.config import IosAppConfig
from appintegrity.service.metrics import Metrics
from appintegrity.store.base import DeviceKey, Store

log = logging.getLogger("appintegrity.service.receipts")

__all__ = [
    "REFRESHED_RECEIPT_MAX_AGE",
    "BackgroundReceiptRefresher",
    "ReceiptCheck",
    "RefreshOutcome",
    "check_attestation_receipt",
    "refresh_key_receipt",
    "risk_decision",
]

# Apple's step 5 for a receipt just fetched from its server: created within five minutes.
REFRESHED_RECEIPT_MAX_AGE = timedelta(minutes=5)

# Failures that are about Apple or our credentials, not about one receipt: "Apple is unavailable
# right now" or "Apple refuses our DeviceCheck key". The rest of a batch waits for the next poll,
# the key is retried within the hour, and the store is not told (it was not this receipt's fault).
ENDS_BATCH = frozenset(
    {
        Reason.APPLE_RECEIPT_REFRESH_RATE_LIMITED,
        Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE,
        Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED,
    }
)


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """The receipt of one attestation: the bytes to store, whether they validated, the metric."""

    receipt: bytes | None
    valid: bool
    risk_metric: int | None
    reason: str | None = None  # why it is not valid (a stable code)
    message: str | None = None

    @property
    def outcome(self) -> str:
        if self.valid:
            return "valid"
        return "missing" if self.receipt is None else "invalid"


def check_attestation_receipt(app: IosApp, attested: AttestedKey, now: datetime) -> ReceiptCheck:
    """Apple's receipt validation for the receipt inside a verified attestation.

    The raw bytes are kept even when they do not validate: an operator can inspect them, and a
    receipt that fails here only because of our trust roots can still be refreshed with Apple.
    """
    raw = attested.receipt or None
    if raw is None:
        return ReceiptCheck(
            None,
            False,
            None,
            Reason.APPLE_RECEIPT_INVALID,
            "the attestation statement carries no receipt",
        )
    try:
        parsed = verify_receipt(
            raw,
            now=now,
            app_id=attested.app_id,
            public_key=attested.public_key,
            trust_roots=app.receipt_roots,
        )
    except AppleVerificationError as exc:
        return ReceiptCheck(raw, False, None, exc.reason, exc.message)
    return ReceiptCheck(raw, True, parsed.risk_metric)


def risk_decision(app: IosAppConfig, risk_metric: int | None) -> tuple[str, tuple[str, ...]]:
    """The decision for a key's stored metric: ``allow``, or the app's ``risk_action`` with
    ``apple.risk_metric_high`` when the metric exceeds ``max_risk_metric``.

    A key without a metric (never refreshed, or its receipt did not validate) is allowed: the
    metric is evidence of abuse, its absence is not.
    """
    threshold = app.max_risk_metric
    if threshold is None or risk_metric is None or risk_metric <= threshold:
        return "allow", ()
    return app.risk_action, (Reason.APPLE_RISK_METRIC_HIGH,)


RefreshStatusName = Literal["updated", "not_modified", "no_data", "invalid", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What one refresh did. ``updated``: the new receipt validated and is stored;
    ``not_modified`` (304) and ``no_data`` (404): the stored receipt stays; ``invalid``: Apple's
    answer did not validate (the stored receipt stays); ``failed``: Apple could not be asked
    (``reason`` says why); ``skipped``: the key has no receipt or is revoked."""

    key_id: str
    app_id: str
    status: RefreshStatusName
    risk_metric: int | None
    reason: str | None = None
    message: str | None = None


async def refresh_key_receipt(
    app: IosApp, key: DeviceKey, store: Store, now: datetime
) -> RefreshOutcome:
    """Refresh one key's receipt with Apple, validate the answer, store it.

    When Apple answered about this receipt without giving a usable newer one (304, 404, another
    4xx, or a receipt that does not validate), the stored receipt is marked checked at ``now``
    (``Store.mark_receipt_checked``), so it is not due again for a full interval; when Apple
    could not be asked or refused our credentials, nothing is marked.

    Raises only ``StoreUnavailableError`` (the store could not record the outcome); every
    failure of Apple's side is an outcome.
    """
    client = app.refresh_client
    if client is None:
        raise ValueError(f"app {app.config.id} has no [apps.receipt_refresh] configured")
    if key.receipt is None or key.revoked_at is not None:
        why = "the key is revoked" if key.revoked_at is not None else "the key has no receipt"
        return RefreshOutcome(key.key_id, key.app_id, "skipped", key.risk_metric, message=why)
    receipt = key.receipt
    try:
        answer = await client.refresh(receipt, now=now)
    except AppleVerificationError as exc:
        if exc.reason not in ENDS_BATCH:
            await store.mark_receipt_checked(key.key_id, receipt, now)
        return RefreshOutcome(
            key.key_id, key.app_id, "failed", key.risk_metric, exc.reason, exc.message
        )
    if answer.status == "not_modified":
        await store.mark_receipt_checked(key.key_id, receipt, now)
        return RefreshOutcome(key.key_id, key.app_id, "not_modified", key.risk_metric)
    if answer.status == "no_data":
        await store.mark_receipt_checked(key.key_id, receipt, now)
        return RefreshOutcome(
            key.key_id,
            key.app_id,
            "no_data",
            key.risk_metric,
            message="Apple holds no data for this key (it keeps 30 days)",
        )
    assert answer.receipt is not None
    try:
        # Apple's steps 1-6 on the new receipt, with step 5 on: it was just fetched.
        parsed = verify_receipt(
            answer.receipt,
            now=now,
            app_id=key.app_id,
            public_key=key.public_key,
            trust_roots=app.receipt_roots,
            max_age=REFRESHED_RECEIPT_MAX_AGE,
        )
    except AppleVerificationError as exc:
        await store.mark_receipt_checked(key.key_id, receipt, now)
        return RefreshOutcome(
            key.key_id, key.app_id, "invalid", key.risk_metric, exc.reason, exc.message
        )
    if not await store.update_receipt(key.key_id, answer.receipt, parsed.risk_metric, now=now):
        return RefreshOutcome(
            key.key_id, key.app_id, "skipped", key.risk_metric, message="the key is gone"
        )
    return RefreshOutcome(key.key_id, key.app_id, "updated", parsed.risk_metric)


# How long a refresher's claim on a key keeps other instances off it: far longer than one
# refresh takes (Apple's answer, then marking the receipt checked, after which it is not due).
CLAIM_SECONDS = 300


class BackgroundReceiptRefresher:
    """Refreshes, for one app, the stored receipts older than ``interval_hours``, oldest first,
    at most ``batch_size`` every ``poll_seconds``.

    Each poll asks the store for the keys due (``Store.keys_due_for_receipt_refresh``, served by
    an index), so every key is reached however many the app has. A refresh that Apple answered
    marks the receipt checked in the store, so it is not due again for ``interval_hours``; one
    that failed because of Apple or our credentials ends the batch and holds that key back in
    memory for an hour at most (fewer such keys than polls in that hour, so the extra rows read
    to skip them stay few).

    Instances sharing a store each run their own refresher and may list the same due keys in
    the same moment. Before asking Apple, a refresher claims the key in the store (the
    rate-limit counter, one hit per key per ``CLAIM_SECONDS`` window, atomic across instances),
    and leaves a key another instance claimed to it. Only a claim straddling a window edge
    can still let a receipt be refreshed twice, which costs one Apple request and is otherwise
    harmless (``mark_receipt_checked`` never replaces a newer receipt).
    """

    def __init__(
        self,
        app: IosApp,
        store: Store,
        clock: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        refresh = app.config.receipt_refresh
        if refresh is None or app.refresh_client is None:
            raise ValueError(f"app {app.config.id} has no [apps.receipt_refresh] configured")
        self.app = app
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.interval = timedelta(hours=refresh.interval_hours)
        self.batch_size = refresh.batch_size
        self.poll_seconds = refresh.poll_seconds
        self._held_until: dict[str, datetime] = {}
        # A claim must not outlast the interval, or a short interval would be skipped.
        self.claim_seconds = max(1, min(CLAIM_SECONDS, int(self.interval.total_seconds())))

    async def run(self) -> None:
        """Poll forever (until cancelled); no failure ends the loop."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.run_once()
            except AppIntegrityError as exc:  # the store is down: try again next poll
                log.warning("receipt refresh app=%s skipped: %s", self.app.config.id, exc.code)
            except Exception:  # a bug must not stop refreshing for good; log.exception shows it
                log.exception("receipt refresh app=%s failed unexpectedly", self.app.config.id)

    async def run_once(self) -> list[RefreshOutcome]:
        """One poll: refresh up to ``batch_size`` due receipts, oldest first."""
        now = self.clock()
        self._held_until = {k: t for k, t in self._held_until.items() if now < t}
        keys = await self.store.keys_due_for_receipt_refresh(
            self.app.config.id, now - self.interval, self.batch_size + len(self._held_until)
        )
        due = [key for key in keys if key.key_id not in self._held_until][: self.batch_size]
        outcomes = []
        for key in due:
            claim = f"receipt-refresh:{key.app_id}:{key.key_id}"
            if not (await self.store.hit_rate_limit(claim, 1, self.claim_seconds, now)).allowed:
                continue  # another instance is refreshing this receipt
            outcome = await refresh_key_receipt(self.app, key, self.store, self.clock())
            outcomes.append(outcome)
            self.metrics.receipt(
                source="refresh",
                app=self.app.config.id,
                outcome=outcome.status,
                reason=outcome.reason or "",
            )
            if outcome.reason in ENDS_BATCH:
                self._held_until[key.key_id] = now + min(self.interval, timedelta(hours=1))
                break
        return outcomes
