"""Debug tokens: secrets that simulators, emulators and CI exchange for app tokens marked
``debug`` (what App Check's debug provider does for devices that cannot attest).

Only the SHA-256 of a secret is stored; the secret is shown once, at creation. An app may hold
at most ``max_debug_tokens`` non-revoked tokens (``[server] max_debug_tokens_per_app``, default
20 as in App Check): each is a way past attestation, so they should stay few and named.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import TYPE_CHECKING

from appintegrity.errors import Code
from appintegrity.store.base import DebugTokenRecord, Store

if TYPE_CHECKING:
    from appintegrity.service.config import ServiceConfig

SECRET_PREFIX = "aidbg_"

# App Check allows 20 debug tokens per app; so do we unless the configuration says otherwise.
DEFAULT_MAX_DEBUG_TOKENS = 20


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def debug_token_limit(config: ServiceConfig | None, app_id: str) -> int:
    """The app's ``max_debug_tokens``, else ``[server] max_debug_tokens_per_app``; the default
    without a configuration (the CLI given only ``--store``)."""
    if config is None:
        return DEFAULT_MAX_DEBUG_TOKENS
    app = config.app(app_id)
    if app is not None and app.max_debug_tokens is not None:
        return app.max_debug_tokens
    return config.server.max_debug_tokens_per_app


async def create_debug_token(
    store: Store, *, app_id: str, name: str, now: datetime, limit: int
) -> tuple[DebugTokenRecord, str]:
    """Store a new debug token for ``app_id``; returns the record and the secret (show once).

    Refused with ``debug_token.limit`` (409) when the app already has ``limit`` non-revoked
    tokens; revoked ones do not count. The check and the insert are two store calls, not one
    atomic step: two admins creating tokens for one app at the same moment (on two instances,
    or the CLI beside the service) may both pass and leave the app one or more over its limit.
    That is acceptable for a rare operator action — the next creation is refused until enough
    are revoked — and keeps the store interface free of a per-app counter.
    """
    from appintegrity.service.errors import service_error  # imports FastAPI: only when needed

    active = [t for t in await store.list_debug_tokens(app_id) if t.revoked_at is None]
    if len(active) >= limit:
        raise service_error(
            Code.DEBUG_TOKEN_LIMIT,
            f"{app_id} already has {len(active)} active debug tokens, its limit is {limit}: "
            "revoke one (appintegrity debug-token revoke TOKEN_ID) before creating another",
        )
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
