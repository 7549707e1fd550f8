"""The Django middleware and view decorator under Django's test Client: every outcome."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from django.views import View
from django_support import configure_django
from web_support import (
    AS_WSGI_TEXT,
    AUD,
    CASES,
    HEADER,
    ISS,
    POLICIES,
    SUBJECT,
    Case,
    World,
    bound_to_utf8_header,
    check_case,
    unreachable_jwks_world,
)

from appintegrity.tokens import build_jwks
from appintegrity.web import Mode, RoutePolicy
from appintegrity.web.django import protect

configure_django(__name__)

MIDDLEWARE = ["appintegrity.web.django.AppIntegrityMiddleware"]


def view(request: HttpRequest) -> HttpResponse:
    claims = getattr(request, "app_integrity", None)
    return JsonResponse({"sub": claims.subject if claims else None})


@protect(RoutePolicy(refuse_debug=True))
def nodebug_view(request: HttpRequest) -> HttpResponse:
    return view(request)


@protect(RoutePolicy(accept_limit=True))
async def limit_ok_view(request: HttpRequest) -> HttpResponse:
    return view(request)


class Premium(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        response = view(request)
        response["X-Balance"] = "1234"
        return response


# /nodebug and /limit-ok are protected by their decorators; the rest by ROUTES.
urlpatterns = [
    path("plain", view),
    path("nodebug", nodebug_view),
    path("limit-ok", limit_ok_view),
    path("once", view),
    path("bound", view),
    path("optional", view),
    path("open", view),
    path("premium", Premium.as_view()),
]
ROUTES = {p: policy for p, policy in POLICIES.items() if p not in ("/nodebug", "/limit-ok")}


def client_for(world: World, mode: Mode) -> Iterator[Client]:
    options = {"PROTECTOR": world.protector(mode), "ROUTES": ROUTES}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        yield Client()


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(world: World, case: Case, mode: Mode) -> None:
    for client in client_for(world, mode):
        response = client.get(case.path, headers=case.headers(world))
        check_case(world, case, mode, response.status_code, json.loads(response.content))


def test_limited_use_token_passes_exactly_once(world: World) -> None:
    for client in client_for(world, Mode.ENFORCE):
        token = world.token(limited_use=True)
        assert client.post("/once", headers={HEADER: token}).json() == {"sub": SUBJECT}
        second = client.post("/once", headers={HEADER: token})
        assert (second.status_code, second.json()["error"]["code"]) == (409, "token.consumed")


def test_decorator_works_without_the_middleware(world: World) -> None:
    options = {"PROTECTOR": world.protector(), "ROUTES": {}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], APP_INTEGRITY=options):
        client = Client()
        assert client.get("/nodebug", headers={HEADER: world.token()}).json() == {"sub": SUBJECT}
        refused = client.get("/nodebug", headers={HEADER: world.token(debug=True)})
        assert refused.status_code == 403
        limited = world.token(decision="limit")
        assert client.get("/limit-ok", headers={HEADER: limited}).json() == {"sub": SUBJECT}
        assert client.get("/limit-ok").json()["error"]["code"] == "token.missing"  # async view
        assert client.get("/plain").status_code == 200  # not decorated, no middleware


def test_settings_driven_configuration(world: World, tmp_path: Path) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(build_jwks([world.key])))
    options = {
        "ISSUER": ISS,
        "AUDIENCE": AUD,
        "JWKS_FILE": str(jwks_file),
        "MODE": "enforce",
        "HEADER": "X-Integrity-Token",
        "ROUTES": {"/plain": {"refuse_debug": True}, "/open": None},
    }
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        client = Client()
        ok = client.get("/plain", headers={"X-Integrity-Token": world.token()})
        assert ok.json() == {"sub": SUBJECT}
        debug = client.get("/plain", headers={"X-Integrity-Token": world.token(debug=True)})
        assert debug.json()["error"]["code"] == "token.debug_refused"
        assert client.get("/plain", headers={HEADER: world.token()}).status_code == 401
        assert client.get("/open").status_code == 200


def test_head_is_checked_by_the_get_pattern_that_serves_it(world: World) -> None:
    options = {"PROTECTOR": world.protector(), "ROUTES": {"GET /premium": RoutePolicy()}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        client = Client()
        refused = client.head("/premium")
        assert refused.status_code == 401 and "X-Balance" not in refused
        allowed = client.head("/premium", headers={HEADER: world.token()})
        assert allowed.status_code == 200 and allowed["X-Balance"] == "1234"


def test_a_bound_header_is_hashed_as_the_bytes_received(world: World) -> None:
    headers = {HEADER: bound_to_utf8_header(world), "Authorization": AS_WSGI_TEXT}
    for client in client_for(world, Mode.ENFORCE):
        response = client.get("/bound", headers=headers)
        assert (response.status_code, response.json()) == (200, {"sub": SUBJECT})


def test_an_unreachable_jwks_is_503_unverifiable(tmp_path: Path) -> None:
    with unreachable_jwks_world(tmp_path) as (world, _):
        for client in client_for(world, Mode.ENFORCE):
            response = client.get("/plain", headers={HEADER: world.token()})
            assert (response.status_code, response.json()["error"]["code"]) == (
                503,
                "token.unverifiable",
            )
            assert response["Retry-After"] == "5"
            # The decorated async view awaits the same refresh.
            decorated = client.get("/limit-ok", headers={HEADER: world.token()})
            assert decorated.status_code == 503
        for client in client_for(world, Mode.MONITOR):
            assert client.get("/plain", headers={HEADER: world.token()}).status_code == 200
