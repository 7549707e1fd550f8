"""Consuming limited-use tokens: each may pass exactly once, across every API instance.

Two ways to remember which token ids were used: ask the service
(``POST /v1/tokens/verify {"token", "consume": true}``), or share the service's store
directly (``Store.consume_token_id``, atomic by contract).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Protocol

import httpx

from appintegrity.errors import Code, StoreUnavailableError
from appintegrity.store.base import Store
from appintegrity.tokens import TOKEN_UNVERIFIABLE, AppTokenClaims, TokenError
from appintegrity.web.background import BackgroundLoop


class TokenConsumer(Protocol):
    """Marks a verified limited-use token as used; raises ``TokenError`` if it was before."""

    def consume(self, token: str, claims: AppTokenClaims) -> None:
        """Consume, blocking (WSGI, Flask, Django)."""

    async def consume_async(self, token: str, claims: AppTokenClaims) -> None:
        """Consume without blocking the event loop (ASGI, FastAPI)."""


def _unavailable(message: str) -> TokenError:
    return TokenError(TOKEN_UNVERIFIABLE, message, 503)


class ServiceTokenConsumer:
    """Consumes through the service's ``POST /v1/tokens/verify`` with ``consume: true``.

    200 ``{"valid": true, ...}`` means this call consumed it; 401 ``{"error": {"code":
    "token.consumed"}}`` means someone did before. Anything else that is not an answer
    (network failure, 5xx, garbage) is 503 ``token.unverifiable``: fail closed.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.url = base_url.rstrip("/") + "/v1/tokens/verify"
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def consume(self, token: str, claims: AppTokenClaims) -> None:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
        try:
            response = self._client.post(self.url, json={"token": token, "consume": True})
        except httpx.HTTPError as exc:
            raise _unavailable(f"cannot reach the token service: {exc}") from exc
        self._conclude(response)

    async def consume_async(self, token: str, claims: AppTokenClaims) -> None:
        loop = asyncio.get_running_loop()
        # httpx's async pool belongs to the loop that made it.
        if self._async_client is None or self._async_loop is not loop:
            self._async_client = httpx.AsyncClient(timeout=self.timeout)
            self._async_loop = loop
        try:
            response = await self._async_client.post(
                self.url, json={"token": token, "consume": True}
            )
        except httpx.HTTPError as exc:
            raise _unavailable(f"cannot reach the token service: {exc}") from exc
        self._conclude(response)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @staticmethod
    def _conclude(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _unavailable(f"token service answered {response.status_code} without JSON")
        if response.status_code == 200 and body.get("valid") is True:
            return
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if response.status_code >= 500 or response.status_code == 429:
            raise _unavailable(f"token service answered {response.status_code}")
        if isinstance(code, str) and code.startswith("token."):
            raise TokenError(code, str(message or code), response.status_code)
        raise TokenError(
            Code.TOKEN_INVALID, f"token service refused the token ({response.status_code})"
        )


class StoreTokenConsumer:
    """Consumes in the service's store (``Store.consume_token_id``), shared by every instance.

    The store is driven on this consumer's own event loop thread, from blocking and async
    callers alike (an async caller awaits it without blocking its loop), so a store whose
    connections belong to one loop (Redis, PostgreSQL) keeps them on that loop. Give the
    consumer a store no other event loop drives (SQLite is loop-free), or one of its own.

    A used id is remembered ``leeway_seconds`` past the token's ``exp``: the verifier accepts
    a token that long after it expires, and a store forgets ids at the time it is given (a
    purge, a Redis TTL). Keep it at least the verifier's leeway (30 s by default).
    """

    def __init__(self, store: Store, *, timeout: float = 5.0, leeway_seconds: int = 300) -> None:
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self.store = store
        self.timeout = timeout
        self.leeway_seconds = leeway_seconds
        self._background = BackgroundLoop("appintegrity-consumer")

    async def consume_async(self, token: str, claims: AppTokenClaims) -> None:
        try:
            await self._background.run_async(self._consume(claims), self.timeout)
        except TimeoutError as exc:
            raise _unavailable("the store did not answer in time") from exc

    def consume(self, token: str, claims: AppTokenClaims) -> None:
        try:
            self._background.run(self._consume(claims), self.timeout)
        except TimeoutError as exc:
            raise _unavailable("the store did not answer in time") from exc

    async def _consume(self, claims: AppTokenClaims) -> None:
        expires_at = datetime.fromtimestamp(claims.expires_at + self.leeway_seconds, UTC)
        try:
            first = await self.store.consume_token_id(claims.jti, expires_at, datetime.now(UTC))
        except StoreUnavailableError as exc:
            raise _unavailable(f"cannot record the token as used: {exc.message}") from exc
        if not first:
            raise TokenError(Code.TOKEN_CONSUMED, "this limited-use token was already used", 409)
