"""The running service: configuration, store, clock and the parts built from them.

One ``IntegrityService`` per FastAPI app; routes reach it as ``request.app.state.service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from appintegrity.errors import AppIntegrityError
from appintegrity.service.app_tokens import SigningKeys
from appintegrity.service.apps import Apps
from appintegrity.service.challenges import Challenges
from appintegrity.service.config import ServiceConfig
from appintegrity.service.metrics import Metrics
from appintegrity.service.rate_limits import RateLimiter
from appintegrity.service.receipts import BackgroundReceiptRefresher
from appintegrity.store import open_store
from appintegrity.store.base import Store
from appintegrity.tokens import IssuedToken

log = logging.getLogger("appintegrity.service")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, second precision: what clients parse most easily."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IntegrityService:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        store: Store | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.owns_store = store is None
        self.store: Store = (
            store if store is not None else open_store(config.server.store, config.server.cache)
        )
        self.clock: Callable[[], datetime] = clock or utc_now
        self.apps = Apps(config)
        self.metrics = Metrics()
        self.challenges = Challenges(self.store, config.server.challenge_ttl_seconds, self.clock)
        self.limiter = RateLimiter(self.store, config.limits, self.clock)
        self.keys = SigningKeys(
            self.store,
            issuer=config.server.issuer,
            audience=config.audience,
            # An old key signs for up to the publish delay after it retires, then its tokens live
            # for up to the longest TTL (and the leeway).
            retention=timedelta(
                seconds=config.max_ttl_seconds
                + config.tokens.leeway_seconds
                + config.tokens.publish_delay_seconds
            ),
            leeway_seconds=config.tokens.leeway_seconds,
            publish_delay=timedelta(seconds=config.tokens.publish_delay_seconds),
            clock=self.clock,
        )
        # Receipts refreshed in the background: apps with [apps.receipt_refresh] background on.
        self.receipt_refreshers = [
            BackgroundReceiptRefresher(app, self.store, self.clock, self.metrics)
            for app in self.apps.ios_apps.values()
            if app.config.receipt_refresh is not None and app.config.receipt_refresh.background
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.store.migrate()
        await self.keys.start()
        self._tasks = [
            asyncio.create_task(self.keys.run_refresh(self.config.tokens.key_refresh_seconds)),
            asyncio.create_task(self._purge_loop()),
        ]
        self._tasks += [asyncio.create_task(r.run()) for r in self.receipt_refreshers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.apps.aclose()
        if self.owns_store:
            await self.store.close()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.server.purge_interval_seconds)
            try:
                await self.store.purge_expired(self.clock())
            except AppIntegrityError as exc:
                log.warning("purging expired challenges failed: %s", exc.code)

    def issue_token(
        self,
        *,
        app_id: str,
        platform: str,
        decision: str,
        limited_use: bool = False,
        debug: bool = False,
        device: str | None = None,
        reasons: tuple[str, ...] = (),
        binding: str | None = None,
    ) -> IssuedToken:
        return self.keys.issuer.issue(
            subject=app_id,
            platform=platform,
            decision=decision,
            ttl_seconds=self.config.app_ttl(app_id),
            now=self.clock(),
            limited_use=limited_use,
            debug=debug,
            device=device,
            reasons=reasons,
            binding=binding,
        )
