"""Every failure leaves the service as ``{"error": {"code", "message"}}`` with a fitting status.

The status follows from the code, so clients can branch on either and the table in
docs/service.md stays true by construction:

* ``request.invalid`` and any ``*.malformed`` → 400
* other verification failures (``apple.*``, ``google.*``), ``challenge.expired``, ``token.*`` → 401
* ``decision.blocked``, ``google.client_error``, ``key.revoked``, ``token.debug_refused`` → 403
  (a retryable ``google.client_error`` adds ``Retry-After``)
* ``challenge.unknown``, ``key.unknown``, ``app.unknown`` → 404
* ``challenge.consumed``, ``key.exists``, ``token.consumed``, ``apple.counter_invalid``,
  ``debug_token.limit`` → 409
* ``request.too_large`` → 413, ``rate.limited`` → 429 (+ ``Retry-After``)
* ``store.unavailable`` → 503
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appintegrity.errors import Code, Reason, ServiceError, VerificationError

log = logging.getLogger("appintegrity.service")

# Short names for the service-only codes (all of them live in appintegrity.errors.Code).
CHALLENGE_MISMATCH = Code.CHALLENGE_MISMATCH
ROUTE_NOT_FOUND = Code.REQUEST_NOT_FOUND
METHOD_NOT_ALLOWED = Code.REQUEST_METHOD_NOT_ALLOWED
INTERNAL = Code.INTERNAL

_STATUS_BY_CODE: dict[str, int] = {
    Code.REQUEST_INVALID: 400,
    Code.TOKEN_NOT_LIMITED_USE: 400,
    CHALLENGE_MISMATCH: 400,
    Code.CHALLENGE_EXPIRED: 401,
    Code.TOKEN_MISSING: 401,
    Code.TOKEN_INVALID: 401,
    Code.TOKEN_EXPIRED: 401,
    Code.UNAUTHORIZED: 401,
    Code.DECISION_BLOCKED: 403,
    Reason.GOOGLE_CLIENT_ERROR: 403,
    Code.KEY_REVOKED: 403,
    Code.TOKEN_DEBUG_REFUSED: 403,
    Code.CHALLENGE_UNKNOWN: 404,
    Code.KEY_UNKNOWN: 404,
    Code.APP_UNKNOWN: 404,
    Code.DEBUG_TOKEN_UNKNOWN: 404,
    ROUTE_NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    Code.CHALLENGE_CONSUMED: 409,
    Code.KEY_EXISTS: 409,
    Code.TOKEN_CONSUMED: 409,
    Code.DEBUG_TOKEN_LIMIT: 409,
    Reason.APPLE_COUNTER_INVALID: 409,
    Code.REQUEST_TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Reason.GOOGLE_API_QUOTA_EXCEEDED: 429,
    Reason.GOOGLE_API_BAD_REQUEST: 400,
    # The service's own Google credentials are wrong: not the client's fault.
    Reason.GOOGLE_API_UNAUTHORIZED: 502,
    Reason.GOOGLE_API_PERMISSION_DENIED: 502,
    Reason.GOOGLE_API_UNAVAILABLE: 503,
    Code.STORE_UNAVAILABLE: 503,
    Code.CONFIG_INVALID: 500,
    INTERNAL: 500,
}


# Failures of the service's own set-up: the app gets a fixed message, the log the details.
_OPERATOR_FAULTS: dict[str, str] = {
    Reason.GOOGLE_API_UNAUTHORIZED: "the service's Google credentials were refused; try later",
    Reason.GOOGLE_API_PERMISSION_DENIED: "the service may not decode this app's tokens; try later",
    Reason.GOOGLE_API_UNAVAILABLE: "Google's Play Integrity API cannot be reached; try later",
}


def status_for(code: str) -> int:
    """The HTTP status for an error code (see the module docstring)."""
    status = _STATUS_BY_CODE.get(code)
    if status is not None:
        return status
    if code.endswith(".malformed"):
        return 400
    return 401


def error_body(
    code: str,
    message: str,
    reasons: Sequence[str] | None = None,
    client_error: Mapping[str, object] | None = None,
) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message}
    if reasons is not None:
        error["reasons"] = list(reasons)
    if client_error is not None:
        error["clientError"] = dict(client_error)
    return {"error": error}


def error_response(
    code: str,
    message: str,
    status: int | None = None,
    *,
    retry_after: int | None = None,
    reasons: Sequence[str] | None = None,
    client_error: Mapping[str, object] | None = None,
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(
        error_body(code, message, reasons, client_error),
        status_code=status if status is not None else status_for(code),
        headers=headers,
    )


class BlockedError(ServiceError):
    """The policy decided ``block`` (enforce mode): 403 with the policy's reasons."""

    def __init__(self, message: str, reasons: Sequence[str]) -> None:
        super().__init__(Code.DECISION_BLOCKED, message, 403)
        self.reasons = tuple(reasons)


class ClientErrorBlocked(ServiceError):
    """The app reported a Play Integrity client error and the app's config says ``block``:
    403 ``google.client_error`` with ``clientError`` (and ``Retry-After`` when retryable)."""

    def __init__(
        self, message: str, client_error: Mapping[str, object], retry_after: int | None
    ) -> None:
        super().__init__(Reason.GOOGLE_CLIENT_ERROR, message, 403, retry_after)
        self.client_error = dict(client_error)


def service_error(code: str, message: str, *, retry_after: int | None = None) -> ServiceError:
    """A ``ServiceError`` whose status comes from the table above."""
    return ServiceError(code, message, status_for(code), retry_after)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """JSON for everything: our errors, validation errors, unknown routes, and bugs."""

    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        reasons = exc.reasons if isinstance(exc, BlockedError) else None
        client_error = exc.client_error if isinstance(exc, ClientErrorBlocked) else None
        return error_response(
            exc.code,
            exc.message,
            exc.status,
            retry_after=exc.retry_after,
            reasons=reasons,
            client_error=client_error,
        )

    async def on_verification_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VerificationError)
        if exc.reason in _OPERATOR_FAULTS:
            # The service's own Google credentials or reach failed: the details (Google's and
            # google-auth's words) are for the operator's log, not for the app.
            log.warning("Google decode API failure %s: %s", exc.reason, exc.message)
            return error_response(exc.reason, _OPERATOR_FAULTS[exc.reason])
        return error_response(exc.reason, exc.message)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(Code.REQUEST_INVALID, _validation_message(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(ROUTE_NOT_FOUND, f"no route {request.url.path}")
        if exc.status_code == 405:
            response = error_response(
                METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.url.path}"
            )
            if exc.headers and "Allow" in exc.headers:  # RFC 9110 §15.5.6: name the methods
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        if exc.status_code == 413:
            return error_response(Code.REQUEST_TOO_LARGE, "request body too large")
        return error_response(Code.REQUEST_INVALID, str(exc.detail), exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(INTERNAL, "internal error")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(VerificationError, on_verification_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: an HTTPException so that FastAPI's body parsing re-raises it
    (it turns other exceptions into a 400) and the handler above answers 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyLimitMiddleware:
    """413 ``request.too_large`` for bodies over the limit: by Content-Length up front, and by
    counting streamed bytes (chunked uploads announce no length)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, Code.REQUEST_INVALID, "bad Content-Length")
                    return
                if declared > limit:
                    await _send_json(send, 413, Code.REQUEST_TOO_LARGE, f"body over {limit} bytes")
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, Code.REQUEST_TOO_LARGE, f"body over {limit} bytes")


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    response = JSONResponse(error_body(code, message), status_code=status)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*response.raw_headers, (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": response.body})
