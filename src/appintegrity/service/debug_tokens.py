"""Debug tokens: secrets that simulators, emulators and CI exchange for app tokens marked
``debug`` (what App Check's debug provider does for devices that cannot attest).

Only the SHA-256 of a secret is stored; the secret is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from appintegrity.store.base import DebugTokenRecord, Store

SECRET_PREFIX = "aidbg_"


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


async def create_debug_token(
    store: Store, *, app_id: str, name: str, now: datetime
) -> tuple[DebugTokenRecord, str]:
    """Store a new debug token for ``app_id``; returns the record and the secret (show once)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = DebugTokenRecord(
        token_id="dt_" + secrets.token_hex(8),
        app_id=app_id,
        name=name,
        secret_hash=hash_secret(secret),
        created_at=now,
    )
    await store.add_debug_token(record)
    return record, secret
