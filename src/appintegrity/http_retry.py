"""Retries for the clients of Apple's and Google's servers: one backoff loop, not two.

A client's single attempt raises ``Retryable`` for a transient failure (timeout, connection
error, 429, 5xx), carrying the typed error to raise once the retries are spent; any other error
passes straight through. ``send_with_retries`` waits ``backoff`` seconds doubled each attempt
(with jitter), or the server's ``Retry-After`` when that is longer. A policy's ``budget`` bounds
the whole call: no wait, and so no retry, would end past it; the last error is raised instead.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from appintegrity.errors import VerificationError

__all__ = [
    "MAX_RETRY_AFTER",
    "RetryPolicy",
    "Retryable",
    "post_once",
    "retry_after",
    "send_with_retries",
]

MAX_RETRY_AFTER = 30.0
"""A server's ``Retry-After`` is honoured up to this many seconds, never longer."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries``: how many times a transient failure is retried after the first attempt;
    ``backoff``: the first wait in seconds, doubled each time; ``budget``: seconds from the first
    attempt past which no retry starts (``None``: no limit but the retries)."""

    retries: int
    backoff: float
    budget: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        if self.budget is not None and not self.budget > 0:
            raise ValueError("budget must be > 0")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry number ``attempt + 1``."""
        delay: float = self.backoff * (2**attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


class Retryable(Exception):
    """A transient failure; carries the error to raise once retries are exhausted."""

    def __init__(self, error: VerificationError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


async def post_once(
    client: httpx.AsyncClient,
    url: str,
    *,
    what: str,
    unavailable: Callable[[str], VerificationError],
    timeout: float,
    **request: object,
) -> httpx.Response:
    """One POST of an attempt: a timeout, a transport failure or an answer that cannot be read
    (e.g. a body its Content-Encoding does not decode: a broken proxy) is ``Retryable``,
    carrying ``unavailable(message)``; ``what`` names the call in that message."""
    try:
        return await client.post(url, timeout=timeout, **request)  # type: ignore[arg-type]
    except httpx.TimeoutException as exc:
        raise Retryable(unavailable(f"{what} timed out after {timeout} s")) from exc
    except httpx.TransportError as exc:
        raise Retryable(unavailable(f"{what} unreachable: {type(exc).__name__}")) from exc
    except httpx.HTTPError as exc:
        raise Retryable(unavailable(f"{what} answer unreadable: {type(exc).__name__}")) from exc


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (clamped to ``0..MAX_RETRY_AFTER``), if numeric."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return None


async def send_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Call ``attempt`` until it returns, raises a non-``Retryable`` error, or the retries or
    the budget are spent (then the last ``Retryable``'s own error is raised)."""
    deadline = None if policy.budget is None else time.monotonic() + policy.budget
    tries = 0
    while True:
        try:
            return await attempt()
        except Retryable as exc:
            if tries >= policy.retries:
                raise exc.error from None
            delay = policy.delay(tries, exc.retry_after)
            # A Retry-After longer than what remains: waiting could only end past the budget.
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise exc.error from None
            tries += 1
            await asyncio.sleep(delay)
