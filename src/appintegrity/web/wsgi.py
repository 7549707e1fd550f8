"""WSGI middleware for any WSGI app; verified claims in ``environ["app_integrity"]``.

``AppIntegrityWSGIMiddleware`` checks app tokens; ``InlineWSGIMiddleware`` checks the device
proof itself (inline mode, see ``appintegrity.web.inline``) and puts the ``DeviceProof`` there.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from appintegrity.web.inline import (
    MAX_BODY_BYTES,
    InlineProtector,
    InlineVerdict,
    InlineVerifier,
    proof_headers,
)
from appintegrity.web.metrics import WebMetrics
from appintegrity.web.policy import Mode, RoutePolicy, RouteSpec, RouteTable, route_table
from appintegrity.web.protector import Protector, Verdict, bound_value

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP header (PEP 3333)."""
    return "HTTP_" + header.upper().replace("-", "_")


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def refusal(verdict: Verdict | InlineVerdict, start_response: StartResponse) -> list[bytes]:
    body = verdict.body()
    headers = [*verdict.headers(), ("content-length", str(len(body)))]
    start_response(status_line(verdict.status), headers)
    return [body]


class AppIntegrityWSGIMiddleware:
    """Checks the app token on the routes ``routes`` protects (all routes when omitted)."""

    def __init__(
        self,
        app: WSGIApp,
        protector: Protector,
        routes: RouteSpec | RouteTable | None = None,
        *,
        default: RoutePolicy | None = None,
    ) -> None:
        self.app = app
        self.protector = protector
        self.routes = route_table(routes, default, protector.validate)
        self._token_key = environ_key(protector.header)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        match = self.routes.match(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        )
        if match is None:
            return self.app(environ, start_response)
        route, policy = match
        token = environ.get(self._token_key)
        binding_value = bound_value(policy, lambda name: environ.get(environ_key(name)))
        verdict = self.protector.check(
            token.strip() if token else None, policy, route=route, binding_value=binding_value
        )
        if not verdict.allowed:
            return refusal(verdict, start_response)
        environ["app_integrity"] = verdict.claims
        environ["app_integrity.verdict"] = verdict
        return self.app(environ, start_response)


_CHUNK = 64 * 1024


def read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or None if it is over ``limit`` bytes; a body that fits is put back
    (``wsgi.input`` becomes a ``BytesIO`` of it) so the app still reads it.

    PEP 3333: read no more than ``CONTENT_LENGTH``; without one the body is empty unless the
    server says the stream ends (``wsgi.input_terminated``, e.g. a chunked request).
    """
    try:
        declared: int | None = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        declared = None
    if declared is not None and declared > limit:
        return None
    stream = environ.get("wsgi.input")
    if stream is None or (declared is None and not environ.get("wsgi.input_terminated")):
        declared = 0
    remaining = limit + 1 if declared is None else declared
    chunks: list[bytes] = []
    size = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK)) if stream is not None else b""
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        remaining -= len(chunk)
    if size > limit:
        return None
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


class InlineWSGIMiddleware:
    """Inline mode for any WSGI app (the ASGI ``InlineMiddleware``'s twin).

    The device proof is checked from the request's headers and body with the core verifiers
    and the store; the ``DeviceProof`` goes to ``environ["app_integrity"]`` (None in monitor
    mode when it did not verify) and the verdict to ``environ["app_integrity.verdict"]``.
    """

    def __init__(
        self,
        app: WSGIApp,
        verifier: InlineVerifier,
        routes: RouteSpec | RouteTable | None = None,
        *,
        default: RoutePolicy | None = None,
        mode: Mode | str = Mode.ENFORCE,
        metrics: WebMetrics | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.protector = InlineProtector(
            verifier, mode=mode, metrics=metrics, max_body_bytes=max_body_bytes
        )
        self.routes = route_table(routes, default, self.protector.validate)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        match = self.routes.match(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        )
        if match is None:
            return self.app(environ, start_response)
        route, policy = match
        body = read_body(environ, self.protector.max_body_bytes)
        if body is None:
            verdict = self.protector.too_large(policy, route=route)
        else:
            headers = proof_headers(lambda name: environ.get(environ_key(name)))
            verdict = self.protector.check(headers, body, policy, route=route)
        if not verdict.allowed:
            return refusal(verdict, start_response)
        environ["app_integrity"] = verdict.proof
        environ["app_integrity.verdict"] = verdict
        return self.app(environ, start_response)
