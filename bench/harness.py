"""Shared timing and reporting for `make bench`: ops/s beside the raw primitive, as a ratio."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def pin_to_one_core() -> None:
    """Benchmarks of the pure core run on one core, as the issues' targets are stated."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def ops_per_second(fn: Callable[[], object], seconds: float = 1.0, batch: int = 50) -> float:
    """Run ``fn`` repeatedly for about ``seconds`` (after a short warm-up); return calls/s.

    The best of three rounds is kept, which damps noise from the other core.
    """
    for _ in range(batch):
        fn()
    best = 0.0
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(batch):
                fn()
            count += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def header(title: str) -> None:
    print(f"\n== {title}")


def row(name: str, value: float, unit: str = "ops/s") -> None:
    print(f"  {name:<58} {value:>12,.0f} {unit}")


def ratio(name: str, value: float, baseline: float, target: float | None = None) -> None:
    """Print ``value / baseline``, and whether it meets ``target`` when one is set."""
    r = value / baseline if baseline else 0.0
    verdict = ""
    if target is not None:
        verdict = f"  (target >= {target:.0%}: {'met' if r >= target else 'NOT met'})"
    print(f"  {name:<58} {r:>12.1%}{verdict}")
