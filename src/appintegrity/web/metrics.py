"""Prometheus counters for protected requests: what passed, what failed and why.

In monitor mode these are the numbers a team reads before switching enforcement on:
``appintegrity_web_requests_total{route, mode, result, reason}`` where ``result`` is
``verified`` or ``unverified`` and ``reason`` names the check (``missing``, ``invalid``,
``expired``, ``debug``, ``limited``, ``consumed``, ``binding``, ...), and ``action`` says
whether the request was ``allowed`` or ``refused``.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter

_LABELS = ("route", "mode", "result", "reason", "action")
_default: WebMetrics | None = None
_default_lock = threading.Lock()


class WebMetrics:
    """The adapters' counters, registered in ``registry`` (a fresh one per test, if you like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.requests = Counter(
            "appintegrity_web_requests",
            "Requests to protected routes, by app-token check outcome",
            _LABELS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str, str, str], Counter] = {}

    def record(self, route: str, mode: str, result: str, reason: str, action: str) -> None:
        key = (route, mode, result, reason, action)
        child = self._children.get(key)
        if child is None:
            child = self.requests.labels(*key)
            self._children[key] = child
        child.inc()

    def count(self, **labels: str) -> float:
        """Sum of the counter over the samples matching ``labels`` (for tests and dashboards)."""
        total = 0.0
        for metric in self.requests.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def default_metrics() -> WebMetrics:
    """One ``WebMetrics`` on the global registry per process (registering twice would fail)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WebMetrics()
        return _default
