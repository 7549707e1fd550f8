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

from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from appintegrity.tokens import AppTokenClaims
from appintegrity.web.policy import DEFAULT_POLICY, RoutePolicy
from appintegrity.web.protector import Protector, Verdict


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


def install(app: Starlette, protector: Protector) -> None:
    """Make ``protector`` the app's default and answer refusals as ``{"error": ...}`` JSON."""
    app.state.app_integrity = protector
    app.add_exception_handler(AppIntegrityRefused, _handle_refusal)


def require_app_token(
    policy: RoutePolicy | None = None, *, protector: Protector | None = None
) -> Callable[[Request], Awaitable[AppTokenClaims | None]]:
    """A dependency enforcing ``policy`` and returning the claims (see the module doc)."""
    chosen = policy or DEFAULT_POLICY
    if protector is not None:
        protector.validate(chosen)

    async def app_token(request: Request) -> AppTokenClaims | None:
        active = protector or getattr(request.app.state, "app_integrity", None)
        if not isinstance(active, Protector):
            raise RuntimeError("call appintegrity.web.fastapi.install(app, protector) first")
        route = request.scope.get("route")
        label = getattr(route, "path", None) or request.url.path
        binding_value = (
            request.headers.get(chosen.binding_header) if chosen.binding_header else None
        )
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

    return app_token
