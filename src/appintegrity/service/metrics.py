"""Prometheus metrics, one registry per app instance (tests run several apps in one process)."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("appintegrity.service.verification")
receipt_log = logging.getLogger("appintegrity.service.receipts")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.verifications = Counter(
            "appintegrity_verifications",
            "Verifications by platform, kind (registration, assertion, debug), outcome and reason.",
            ["platform", "kind", "outcome", "reason"],
            registry=self.registry,
        )
        self.receipts = Counter(
            "appintegrity_receipts",
            "App Attest receipts by source (registration, refresh) and outcome (valid, invalid, "
            "missing; updated, not_modified, no_data, invalid, failed, skipped).",
            ["source", "outcome", "reason"],
            registry=self.registry,
        )
        self.monitored = Counter(
            "appintegrity_policy_monitored",
            "Policy rules that failed but are set to 'ignore' (watched, not enforced), by "
            "platform and reason: what enforcing them would cost.",
            ["platform", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "appintegrity_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def verification(
        self,
        *,
        platform: str,
        kind: str,
        app: str,
        outcome: str,
        reason: str,
        started: float,
    ) -> None:
        """Count one verification and log one line: never a token, challenge or secret."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.verifications.labels(platform, kind, outcome, reason).inc()
        log.info(
            "verification platform=%s kind=%s app=%s outcome=%s reason=%s latency_ms=%.1f",
            platform,
            kind,
            app or "-",
            outcome,
            reason or "-",
            elapsed_ms,
        )

    def policy_monitored(self, *, platform: str, app: str, reasons: tuple[str, ...]) -> None:
        """Count and log the failed rules an app only watches (action ``ignore``)."""
        for reason in reasons:
            self.monitored.labels(platform, reason).inc()
        if reasons:
            log.info(
                "policy monitored platform=%s app=%s reasons=%s",
                platform,
                app or "-",
                ",".join(reasons),
            )

    def receipt(self, *, source: str, app: str, outcome: str, reason: str) -> None:
        """Count one receipt check or refresh and log one line (never the receipt itself)."""
        self.receipts.labels(source, outcome, reason).inc()
        receipt_log.info(
            "receipt source=%s app=%s outcome=%s reason=%s",
            source,
            app or "-",
            outcome,
            reason or "-",
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Observe every HTTP request's latency, labelled by the matched route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
