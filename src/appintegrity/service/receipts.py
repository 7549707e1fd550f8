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
from appintegrity.apple.receipt import parse_receipt, verify_receipt
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

# Failures that say "Apple is unavailable right now": the rest of a batch waits for the next poll.
_TRANSIENT = frozenset(
    {Reason.APPLE_RECEIPT_REFRESH_RATE_LIMITED, Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE}
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

    Raises only ``StoreUnavailableError`` (the store could not record the new receipt); every
    failure of Apple's side is an outcome.
    """
    client = app.refresh_client
    if client is None:
        raise ValueError(f"app {app.config.id} has no [apps.receipt_refresh] configured")
    if key.receipt is None or key.revoked_at is not None:
        why = "the key is revoked" if key.revoked_at is not None else "the key has no receipt"
        return RefreshOutcome(key.key_id, key.app_id, "skipped", key.risk_metric, message=why)
    try:
        answer = await client.refresh(key.receipt, now=now)
    except AppleVerificationError as exc:
        return RefreshOutcome(
            key.key_id, key.app_id, "failed", key.risk_metric, exc.reason, exc.message
        )
    if answer.status == "not_modified":
        return RefreshOutcome(key.key_id, key.app_id, "not_modified", key.risk_metric)
    if answer.status == "no_data":
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
        return RefreshOutcome(
            key.key_id, key.app_id, "invalid", key.risk_metric, exc.reason, exc.message
        )
    if not await store.update_receipt(key.key_id, answer.receipt, parsed.risk_metric):
        return RefreshOutcome(
            key.key_id, key.app_id, "skipped", key.risk_metric, message="the key is gone"
        )
    return RefreshOutcome(key.key_id, key.app_id, "updated", parsed.risk_metric)


class BackgroundReceiptRefresher:
    """Refreshes, for one app, the stored receipts older than ``interval_hours``, at most
    ``batch_size`` every ``poll_seconds``.

    The store offers no "receipts due" query, so each poll scans the app's newest
    ``scan_limit`` keys; creation times are parsed once per receipt and remembered. A key whose
    refresh did not update it is not tried again before ``interval_hours`` (an hour at most
    when Apple was unavailable). Rate limiting or an outage ends the batch early.
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
        self.scan_limit = refresh.scan_limit
        self._created: dict[str, tuple[int, datetime | None, datetime | None]] = {}
        self._retry_at: dict[str, datetime] = {}

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
        """One poll: refresh up to ``batch_size`` due receipts; returns what happened."""
        now = self.clock()
        keys = await self.store.list_keys(self.app.config.id, self.scan_limit)
        due = [key for key in keys if self._due(key, now)][: self.batch_size]
        outcomes = []
        for key in due:
            outcome = await refresh_key_receipt(self.app, key, self.store, self.clock())
            outcomes.append(outcome)
            self.metrics.receipt(
                source="refresh",
                app=self.app.config.id,
                outcome=outcome.status,
                reason=outcome.reason or "",
            )
            if outcome.status == "updated":
                self._retry_at.pop(key.key_id, None)
                continue
            transient = outcome.reason in _TRANSIENT
            wait = min(self.interval, timedelta(hours=1)) if transient else self.interval
            self._retry_at[key.key_id] = now + wait
            if transient:
                break
        return outcomes

    def _due(self, key: DeviceKey, now: datetime) -> bool:
        if key.receipt is None or key.revoked_at is not None:
            return False
        retry_at = self._retry_at.get(key.key_id)
        if retry_at is not None and now < retry_at:
            return False
        fingerprint = hash(key.receipt)
        cached = self._created.get(key.key_id)
        if cached is None or cached[0] != fingerprint:
            try:
                parsed = parse_receipt(key.receipt)
                cached = (fingerprint, parsed.creation_time, parsed.not_before)
            except AppleVerificationError:
                cached = (fingerprint, None, None)  # unreadable: nothing Apple could renew
            self._created[key.key_id] = cached
        _, created, not_before = cached
        if created is None or now - created < self.interval:
            return False
        return not_before is None or not_before <= now
