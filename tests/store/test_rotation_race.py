"""Signing-key rotations racing on one store (two instances, or the CLI beside the service):
whatever the interleaving, the newest key stays active and every key of earlier rotations is
retired. (The two new keys of one race may both stay active when each listed the keys before
the other was added: both are published, and the next rotation retires them.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from appintegrity.service.app_tokens import new_signing_key, rotate_signing_key

from .conftest import Backend

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def test_concurrent_rotations_leave_exactly_the_newest_key_active(backend: Backend) -> None:
    first, second = await backend.open(), await backend.open()
    original = await new_signing_key(first, NOW)
    earlier = {original.kid}
    for round_ in range(8):
        # Same instant on both sides (the worst case): the kid breaks the tie.
        now = NOW.replace(minute=round_ + 1)
        made = await asyncio.gather(rotate_signing_key(first, now), rotate_signing_key(second, now))
        active = {k.kid for k in await first.list_signing_keys() if k.retired_at is None}
        newest = max(made, key=lambda r: (r.created_at, r.kid)).kid
        assert newest in active
        assert active <= {r.kid for r in made}
        assert not active & earlier
        earlier |= {r.kid for r in made}
