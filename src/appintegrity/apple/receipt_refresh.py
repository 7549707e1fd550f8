"""Receipt refresh: trade a stored App Attest receipt for a newer one with the fraud-risk metric.

The I/O shell around ``appintegrity.apple.receipt``: ``POST /v1/attestationData`` on Apple's
App Attest data server, authorised by an ES256 JWT signed with the team's DeviceCheck key, the
body the base64 receipt. Apple answers 200 with a new receipt (base64), 304 when the old one's
"not before" time has not passed, 404 when it holds no data for the key (it keeps 30 days).

The new receipt is returned as bytes and is not trusted yet: pass it to ``verify_receipt``
(Apple recommends ``max_age`` of five minutes for a receipt just fetched). 429, 5xx, timeouts and
connection failures are retried with exponential backoff; 400/401/403 are not (retrying cannot
fix them). Every failure is an ``AppleVerificationError`` with an ``apple.receipt_refresh_*``
reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Literal

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.encoding import EncodingError, b64_encode, b64decode_lenient
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.http_retry import (
    Retryable,
    RetryPolicy,
    post_once,
    retry_after,
    send_with_retries,
)

__all__ = [
    "DEVELOPMENT_BASE_URL",
    "PRODUCTION_BASE_URL",
    "REFRESH_PATH",
    "ReceiptRefreshClient",
    "RefreshResult",
    "RefreshStatus",
]

PRODUCTION_BASE_URL = "https://data.appattest.apple.com"
DEVELOPMENT_BASE_URL = "https://data-development.appattest.apple.com"
REFRESH_PATH = "/v1/attestationData"

_MAX_RECEIPT_TEXT = 128 * 1024

RefreshStatus = Literal["updated", "not_modified", "no_data"]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What Apple answered: ``updated`` (``receipt`` holds the new, still unverified, receipt),
    ``not_modified`` (keep the old one; too early to refresh) or ``no_data`` (Apple has none)."""

    status: RefreshStatus
    receipt: bytes | None


def _error(reason: Reason, message: str) -> AppleVerificationError:
    return AppleVerificationError(reason, message)


class ReceiptRefreshClient:
    """Refresh receipts with Apple's App Attest data server.

    ``private_key_pem`` is the DeviceCheck key (``AuthKey_<key id>.p8``); ``environment`` picks
    production or development (``base_url`` overrides both, for a fake server). ``retries`` is how
    many times a transient failure is retried after the first attempt, waiting ``backoff`` seconds
    doubled each time (with jitter, or the server's ``Retry-After`` when longer).
    """

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key_pem: bytes,
        environment: str = "production",
        base_url: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if environment not in ("production", "development"):
            raise ValueError(f"environment must be production or development, not {environment!r}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0, timeout > 0")
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the DeviceCheck key must be an EC P-256 private key (ES256)")
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        if base_url is None:
            base_url = PRODUCTION_BASE_URL if environment == "production" else DEVELOPMENT_BASE_URL
        self._url = base_url.rstrip("/") + REFRESH_PATH
        self._timeout = timeout
        self._retry = RetryPolicy(retries=retries, backoff=backoff)
        self._http = http
        self._owns_http = http is None

    @property
    def url(self) -> str:
        """The endpoint receipts are posted to."""
        return self._url

    def authorization_token(self, now: datetime) -> str:
        """The ES256 JWT for ``Authorization``: ``kid`` = key id, ``iss`` = team id, ``iat``."""
        return jwt.encode(
            {"iss": self._team_id, "iat": int(now.timestamp())},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )

    async def refresh(self, receipt: bytes, *, now: datetime) -> RefreshResult:
        """Post ``receipt`` (raw CMS bytes) and return Apple's answer."""
        if not receipt:
            raise ValueError("receipt must not be empty")
        body = b64_encode(bytes(receipt)).encode("ascii")
        headers = {"Authorization": self.authorization_token(now)}
        return await send_with_retries(lambda: self._attempt(body, headers), self._retry)

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> RefreshResult:
        response = await post_once(
            self._client(),
            self._url,
            what="receipt refresh",
            unavailable=partial(_error, Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE),
            timeout=self._timeout,
            content=body,
            headers=headers,
        )
        status = response.status_code
        if status == 200:
            return RefreshResult("updated", self._new_receipt(response))
        if status == 304:
            return RefreshResult("not_modified", None)
        if status == 404:
            return RefreshResult("no_data", None)
        message = f"receipt refresh answered HTTP {status}{_detail(response)}"
        if status in (401, 403):
            raise _error(
                Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED,
                f"{message}: check the team id, key id and that the key has DeviceCheck enabled",
            )
        if status == 429:
            raise Retryable(
                _error(Reason.APPLE_RECEIPT_REFRESH_RATE_LIMITED, message), retry_after(response)
            )
        if status >= 500:
            raise Retryable(
                _error(Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE, message), retry_after(response)
            )
        raise _error(Reason.APPLE_RECEIPT_REFRESH_FAILED, message)

    @staticmethod
    def _new_receipt(response: httpx.Response) -> bytes:
        text = response.content
        if not text.strip():
            raise _error(Reason.APPLE_RECEIPT_REFRESH_FAILED, "HTTP 200 without a receipt")
        if len(text) > _MAX_RECEIPT_TEXT:
            raise _error(
                Reason.APPLE_RECEIPT_REFRESH_FAILED, f"HTTP 200 with a {len(text)}-byte body"
            )
        try:
            return b64decode_lenient(text)
        except EncodingError as exc:
            raise _error(
                Reason.APPLE_RECEIPT_REFRESH_FAILED, f"HTTP 200 body is not base64: {exc}"
            ) from exc

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client this object created (never one passed in)."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> ReceiptRefreshClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _detail(response: httpx.Response) -> str:
    """A short, printable excerpt of Apple's error body (it never contains our secrets)."""
    text = response.text.strip()[:200]
    return f" ({text})" if text and text.isprintable() else ""
