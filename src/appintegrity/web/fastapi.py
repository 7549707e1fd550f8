"""FastAPI: a dependency that returns the verified claims, per route and per policy.

    app = FastAPI()
    install(app, protector)

    @app.post("/purchases")
    async def purchase(claims: AppTokenClaims = Depends(require_app_token(RoutePolicy()))):
        ...

In monitor mode the dependency returns None when the token did not verify. A refusal is an
``HTTPException``: with ``install`` its body is the ``{"error": {"code", "message"}}`` every
adapter answers; without, FastAPI's own handler answers the same status and headers with
``{"detail": {"code", "message"}}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from appintegrity.tokens import AppTokenClaims
from appintegrity.web.policy import DEFAULT_POLICY, RoutePolicy
from appintegrity.web.protector import Protector, Verdict, bound_value


class AppIntegrityRefused(HTTPException):
    """Raised by the dependency to answer with the verdict's status, headers and JSON error
    (an ``HTTPException``, so an app without ``install`` still answers it, never with a 500)."""

    def __init__(self, verdict: Verdict) -> None:
        error = verdict.error
        detail = {"code": str(error.code), "message": error.message} if error else None
        headers = {name: value for name, value in verdict.headers() if name != "content-type"}
        super().__init__(verdict.status, detail, headers)
        self.verdict = verdict


def refusal_response(verdict: Verdict) -> Response:
    return Response(
        content=verdict.body(),
        status_code=verdict.status,
        headers=dict(verdict.headers()),
        media_type="application/json",
    )


async def _handle_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppIntegrityRefused)
    return refusal_response(exc.verdict)


_POLICY_ATTRIBUTE = "app_integrity_policy"


def _policies(routes: Iterable[BaseRoute]) -> Iterator[RoutePolicy]:
    """The policies of the ``require_app_token`` dependencies (without a protector of their
    own) that ``routes`` use, however deep in sub-dependencies."""
    for route in routes:
        dependant = getattr(route, "dependant", None)
        stack = [dependant] if dependant is not None else []
        while stack:
            current = stack.pop()
            stack.extend(current.dependencies)
            policy = getattr(current.call, _POLICY_ATTRIBUTE, None)
            if isinstance(policy, RoutePolicy):
                yield policy


def install(app: Starlette, protector: Protector) -> None:
    """Make ``protector`` the app's default and answer refusals as ``{"error": ...}`` JSON.

    Every route's ``require_app_token`` policy is checked with ``protector`` (``ValueError``
    when it cannot be served): those declared so far now, the rest when the app starts.
    """
    for policy in _policies(app.routes):
        protector.validate(policy)
    app.state.app_integrity = protector
    app.add_exception_handler(AppIntegrityRefused, _handle_refusal)
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        for policy in _policies(app.routes):
            protector.validate(policy)
        async with serve(target) as state:
            yield state

    app.router.lifespan_context = lifespan


def require_app_token(
    policy: RoutePolicy | None = None, *, protector: Protector | None = None
) -> Callable[[Request], Awaitable[AppTokenClaims | None]]:
    """A dependency enforcing ``policy`` and returning the claims (see the module doc)."""
    chosen = policy or DEFAULT_POLICY
    if protector is not None:
        protector.validate(chosen)
    # The installed protector this policy was last checked with (an app served without its
    # lifespan never ran the start-up check, so the first request makes it).
    checked = protector

    async def app_token(request: Request) -> AppTokenClaims | None:
        active = protector or getattr(request.app.state, "app_integrity", None)
        if not isinstance(active, Protector):
            raise RuntimeError("call appintegrity.web.fastapi.install(app, protector) first")
        nonlocal checked
        if active is not checked:
            active.validate(chosen)
            checked = active
        route = request.scope.get("route")
        label = getattr(route, "path", None) or request.url.path
        binding_value = bound_value(chosen, request.headers.get)
        verdict = await active.check_async(
            request.headers.get(active.header),
            chosen,
            route=label,
            binding_value=binding_value,
        )
        if not verdict.allowed:
            raise AppIntegrityRefused(verdict)
        request.state.app_integrity = verdict.claims
        return verdict.claims

    if protector is None:
        setattr(app_token, _POLICY_ATTRIBUTE, chosen)
    return app_token
