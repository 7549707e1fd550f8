"""The shop's views: the middleware (``ROUTES``) or ``@protect`` has checked the token."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appintegrity.tokens import AppTokenClaims
from appintegrity.web import RoutePolicy
from appintegrity.web.django import protect


def app_summary(claims: AppTokenClaims | None) -> dict[str, object] | None:
    """What the view knows about the caller (None: monitor mode let an unverified call in)."""
    if claims is None:
        return None
    return {
        "id": claims.subject,
        "platform": claims.platform,
        "decision": claims.decision,
        "debug": claims.debug,
    }


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_POST
def purchase(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"purchased": True, "app": app_summary(request.app_integrity)})  # type: ignore[attr-defined]


@require_GET
def premium(request: HttpRequest) -> HttpResponse:
    claims: AppTokenClaims | None = request.app_integrity  # type: ignore[attr-defined]
    # A "limit" device still reads, in standard quality.
    quality = "hd" if claims is not None and claims.decision == "allow" else "sd"
    return JsonResponse({"content": "premium", "quality": quality, "app": app_summary(claims)})


@require_POST
@protect(RoutePolicy(require_limited_use=True, refuse_debug=True))  # each token works once
def redeem(request: HttpRequest) -> HttpResponse:
    claims: AppTokenClaims | None = request.app_integrity  # type: ignore[attr-defined]
    return JsonResponse({"credits": 50, "token_id": claims.jti if claims else None})


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus: what monitor mode saw (``appintegrity_web_requests_total``)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
