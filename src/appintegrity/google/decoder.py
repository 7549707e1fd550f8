"""Google's ``decodeIntegrityToken``: the only way to read standard-request tokens.

An async client over ``httpx`` authorised by a service account (``google-auth``, the
``playintegrity`` scope). google-auth is synchronous, so the access token is refreshed in a worker
thread, once at a time and within the decoder's timeout, and reused until it nears expiry. 429 and
5xx answers, timeouts and connection errors are retried with exponential backoff and jitter;
400/401/403 are not (retrying cannot fix them) and surface as their own reason codes, so an
operator can tell a bad token from a wrong project or an exhausted quota.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

import httpx
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2 import service_account

from appintegrity.errors import GoogleVerificationError, Reason
from appintegrity.http_retry import (
    Retryable,
    RetryPolicy,
    post_once,
    retry_after,
    send_with_retries,
)

__all__ = ["PLAY_INTEGRITY_SCOPE", "GoogleApiDecoder"]

PLAY_INTEGRITY_SCOPE = "https://www.googleapis.com/auth/playintegrity"
_PACKAGE_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")


def _google_message(response: httpx.Response) -> str:
    """Google's ``{"error": {"message"}}``, shortened; never echoes the token."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        status = body["error"].get("status")
        if isinstance(message, str):
            prefix = f"{status}: " if isinstance(status, str) else ""
            return f"HTTP {response.status_code} {prefix}{message[:200]}"
    return f"HTTP {response.status_code}"


class _TimedAuthRequest(AuthRequest):
    """google-auth's ``requests`` transport with the decoder's timeout forced on every call.

    google-auth's own default is 120 s per call, and a refresh runs under the refresh lock: a
    token endpoint that accepts the connection and never answers would hold every decode that
    long.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
        )


class GoogleApiDecoder:
    """Decode tokens through ``playintegrity.googleapis.com`` with a service account.

    Give ``credentials`` (any google-auth credentials), or ``service_account_info`` (the JSON key
    as a mapping), or ``service_account_file``. ``base_url`` and ``token_uri`` point at fakes in
    tests. ``timeout`` bounds each HTTP call (to Google and to the OAuth token endpoint);
    ``retries`` is how many times a transient failure is retried after the first attempt;
    ``total_timeout`` (default twice ``timeout``) bounds one decode: no retry starts, and no
    ``Retry-After`` is waited for, past it (the last error is raised instead).
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        service_account_info: Mapping[str, Any] | None = None,
        service_account_file: str | None = None,
        base_url: str = "https://playintegrity.googleapis.com",
        token_uri: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        total_timeout: float | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        given = [x is not None for x in (credentials, service_account_info, service_account_file)]
        if sum(given) != 1:
            raise ValueError(
                "pass one of credentials, service_account_info or service_account_file"
            )
        if credentials is None:
            if service_account_info is not None:
                info = dict(service_account_info)
            else:
                with open(str(service_account_file), encoding="utf-8") as handle:
                    info = json.load(handle)
            if token_uri is not None:
                info["token_uri"] = token_uri
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[PLAY_INTEGRITY_SCOPE]
            )
        else:
            if getattr(credentials, "requires_scopes", False):
                credentials = credentials.with_scopes([PLAY_INTEGRITY_SCOPE])  # type: ignore[attr-defined]
            if token_uri is not None:
                if not isinstance(credentials, service_account.Credentials):
                    raise ValueError("token_uri can only be overridden for service accounts")
                credentials = credentials.with_token_uri(token_uri)
        if total_timeout is None:
            total_timeout = 2 * timeout
        if retries < 0 or backoff < 0 or not timeout > 0 or not total_timeout > 0:
            raise ValueError("retries and backoff must be >= 0, timeout and total_timeout > 0")
        self._credentials: Credentials = credentials
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._retry = RetryPolicy(retries=retries, backoff=backoff, budget=total_timeout)
        self._http = http
        self._owns_http = http is None
        self._refresh_lock = asyncio.Lock()
        self._auth_request = _TimedAuthRequest(timeout)
        self._refreshes = 0  # refreshes ended, to tell whether one ran while a call waited
        self._failed_refresh: _RefreshFailure | None = None  # the last one, if it failed

    async def __aenter__(self) -> GoogleApiDecoder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this decoder created it (and the OAuth session)."""
        self._auth_request.session.close()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    async def _access_token(self, *, rejected: str | None = None) -> str:
        """A valid access token; refreshed in a thread, one refresh at a time.

        ``rejected``: a token Google answered 401 to. It is refreshed only if it is still the
        current one: when many calls get a 401 at once, the first refreshes and the others
        use its new token instead of each asking the token endpoint again.
        """
        refreshes_seen = self._refreshes
        async with self._refresh_lock:
            if not self._credentials.valid or (
                rejected is not None and self._credentials.token == rejected
            ):
                failed = self._failed_refresh
                if failed is not None and self._refreshes != refreshes_seen:
                    # The refresh that ran while this call waited for the lock failed: share its
                    # failure rather than queue one more call (each up to the timeout) behind it.
                    raise failed.error()
                self._failed_refresh = None
                try:
                    await asyncio.to_thread(self._credentials.refresh, self._auth_request)
                except (auth_exceptions.RefreshError, auth_exceptions.TransportError) as exc:
                    self._failed_refresh = _RefreshFailure.of(exc)
                    raise self._failed_refresh.error() from exc
                finally:
                    self._refreshes += 1
            token = self._credentials.token
        if not isinstance(token, str):
            raise GoogleVerificationError(
                Reason.GOOGLE_API_UNAUTHORIZED, "the service account gave no access token"
            )
        return token

    async def decode(self, package_name: str, token: str) -> dict[str, object]:
        """Decode ``token`` for ``package_name``; return ``tokenPayloadExternal``.

        Raises ``GoogleVerificationError``: ``google.api_bad_request`` (400: not a valid token),
        ``google.api_unauthorized`` (401, after one token refresh), ``google.api_permission_denied``
        (403: the service account's project is not linked to the app), ``google.api_quota_exceeded``
        (429 after retries), ``google.api_unavailable`` (5xx, timeouts, network, after retries),
        ``google.malformed`` (a 200 answer without a payload object).
        """
        if not isinstance(package_name, str) or not _PACKAGE_NAME.match(package_name):
            raise ValueError(f"not an Android package name: {package_name!r}")
        url = f"{self._base_url}/v1/{package_name}:decodeIntegrityToken"
        rejected: str | None = None

        async def attempt() -> dict[str, object]:
            # A 401 is not transient but the cached access token may have been revoked: replace
            # it once (without spending a retry); a second 401 is the answer.
            nonlocal rejected
            while True:
                try:
                    return await self._attempt(url, token, rejected=rejected)
                except _Unauthorized as exc:
                    if rejected is not None:
                        raise exc.error from None
                    rejected = exc.access_token

        return await send_with_retries(attempt, self._retry)

    async def _attempt(self, url: str, token: str, *, rejected: str | None) -> dict[str, object]:
        access_token = await self._access_token(rejected=rejected)
        response = await post_once(
            self._client(),
            url,
            what="decodeIntegrityToken",
            unavailable=partial(GoogleVerificationError, Reason.GOOGLE_API_UNAVAILABLE),
            timeout=self._timeout,
            json={"integrityToken": token},
            headers={"Authorization": f"Bearer {access_token}"},
        )
        status = response.status_code
        if status == 200:
            return self._payload(response)
        message = f"decodeIntegrityToken answered {_google_message(response)}"
        if status == 401:
            raise _Unauthorized(
                GoogleVerificationError(Reason.GOOGLE_API_UNAUTHORIZED, message), access_token
            )
        if status == 403:
            raise GoogleVerificationError(Reason.GOOGLE_API_PERMISSION_DENIED, message)
        if status == 429:
            raise Retryable(
                GoogleVerificationError(Reason.GOOGLE_API_QUOTA_EXCEEDED, message),
                retry_after(response),
            )
        if status >= 500:
            raise Retryable(
                GoogleVerificationError(Reason.GOOGLE_API_UNAVAILABLE, message),
                retry_after(response),
            )
        raise GoogleVerificationError(Reason.GOOGLE_API_BAD_REQUEST, message)

    @staticmethod
    def _payload(response: httpx.Response) -> dict[str, object]:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise GoogleVerificationError(
                Reason.GOOGLE_MALFORMED, "decodeIntegrityToken answered something not JSON"
            ) from exc
        payload = body.get("tokenPayloadExternal") if isinstance(body, dict) else None
        if not isinstance(payload, dict):
            raise GoogleVerificationError(
                Reason.GOOGLE_MALFORMED,
                "decodeIntegrityToken answered without tokenPayloadExternal",
            )
        return payload


@dataclass(frozen=True, slots=True)
class _RefreshFailure:
    """Why the last access-token refresh failed, to raise afresh for each call it fails."""

    reason: Reason
    message: str
    retryable: bool

    @classmethod
    def of(cls, exc: auth_exceptions.GoogleAuthError) -> _RefreshFailure:
        if isinstance(exc, auth_exceptions.TransportError):  # timeout, connection refused
            return cls(
                Reason.GOOGLE_API_UNAVAILABLE, f"the OAuth token endpoint failed: {exc}", True
            )
        if exc.retryable:  # the token endpoint is down (5xx), not refusing us
            return cls(
                Reason.GOOGLE_API_UNAVAILABLE,
                f"the OAuth token endpoint is unavailable: {exc}",
                True,
            )
        return cls(
            Reason.GOOGLE_API_UNAUTHORIZED,
            f"the service account could not get an access token: {exc}",
            False,
        )

    def error(self) -> Exception:
        error = GoogleVerificationError(self.reason, self.message)
        return Retryable(error) if self.retryable else error


class _Unauthorized(Exception):
    """A 401, with the access token Google refused."""

    def __init__(self, error: GoogleVerificationError, access_token: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.access_token = access_token
