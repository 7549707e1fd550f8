"""WSGI middleware for any WSGI app; verified claims in ``environ["app_integrity"]``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from appintegrity.web.policy import RoutePolicy, RouteSpec, RouteTable, route_table
from appintegrity.web.protector import Protector, Verdict

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP header (PEP 3333)."""
    return "HTTP_" + header.upper().replace("-", "_")


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def refusal(verdict: Verdict, start_response: StartResponse) -> list[bytes]:
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
        self.routes = route_table(routes, default)
        for policy in self.routes.policies():
            protector.validate(policy)
        self._token_key = environ_key(protector.header)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        match = self.routes.match(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        )
        if match is None:
            return self.app(environ, start_response)
        route, policy = match
        token = environ.get(self._token_key)
        binding_value = (
            environ.get(environ_key(policy.binding_header)) if policy.binding_header else None
        )
        verdict = self.protector.check(
            token.strip() if token else None, policy, route=route, binding_value=binding_value
        )
        if not verdict.allowed:
            return refusal(verdict, start_response)
        environ["app_integrity"] = verdict.claims
        environ["app_integrity.verdict"] = verdict
        return self.app(environ, start_response)
