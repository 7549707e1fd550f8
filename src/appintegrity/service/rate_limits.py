"""Fixed-window rate limits per client address and per device key, counted in the store so
that they hold across instances; 0 switches a limit off."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from appintegrity.errors import Code
from appintegrity.service.config import LimitsConfig
from appintegrity.service.errors import service_error
from appintegrity.store.base import Store

WINDOW_SECONDS = 60


class RateLimiter:
    def __init__(self, store: Store, limits: LimitsConfig, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock

    async def _hit(self, bucket: str, limit: int) -> None:
        if limit <= 0:
            return
        result = await self.store.hit_rate_limit(bucket, limit, WINDOW_SECONDS, self.clock())
        if not result.allowed:
            raise service_error(
                Code.RATE_LIMITED,
                f"more than {limit} requests per minute; retry later",
                retry_after=max(1, result.retry_after_seconds),
            )

    async def challenge(self, client: str) -> None:
        await self._hit(f"challenge:ip:{client}", self.limits.challenges_per_minute_per_ip)

    async def verification(self, client: str) -> None:
        """Per client address, before any work: unverified floods stop here."""
        await self._hit(f"verify:ip:{client}", self.limits.verifications_per_minute_per_ip)

    async def device_key(self, key_id: str) -> None:
        """Per App Attest key, counted once the device's signature has verified: a stranger
        who merely knows a key id cannot spend that device's allowance."""
        await self._hit(f"verify:key:{key_id}", self.limits.verifications_per_minute_per_key)
