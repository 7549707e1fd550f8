"""An event loop on its own thread, so blocking frameworks can drive async code.

WSGI, Flask and Django views are not coroutines, but the store (``Store``) and the Play
Integrity decoder are. Rather than start and stop a loop per request (and lose every pooled
connection with it), each user of this class keeps one loop alive on a daemon thread and hands
it coroutines. Everything the loop drives must not be tied to another loop (SQLite is not).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """One event loop on a daemon thread, started on first use."""

    def __init__(self, name: str = "appintegrity-background") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop and wait for it; ``TimeoutError`` after ``timeout`` s
        (the coroutine is then cancelled, so a stuck store call does not pile up)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._started())
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def run_async(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """``run`` for async callers: the coroutine runs on this loop while the caller's loop
        awaits it, so what it drives stays on one loop whichever loop calls (Django runs each
        async view of a WSGI deployment on a loop of its own, gone after the request)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._started())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=_serve, args=(loop,), name=self.name, daemon=True).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Stop the loop and its thread (a later ``run`` starts a new one)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:
        loop.close()
