"""Inline mode through the Django middleware and view decorator under Django's test Client:
every outcome, both modes; the ``DeviceProof`` on ``request.app_integrity``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django_support import configure_django
from inline_support import BODY, CASES, MAX_BODY, ROUTES, Case, Rig, run_case

from appintegrity.web import Mode, RoutePolicy
from appintegrity.web.django import protect
from appintegrity.web.inline import DeviceProof, InlineVerifier
from appintegrity.web.metrics import default_metrics

configure_django(__name__)

MIDDLEWARE = ["appintegrity.web.django.AppIntegrityMiddleware"]
SETTINGS_VERIFIER: InlineVerifier | None = None  # for the dotted-path configuration test


def view(request: HttpRequest) -> HttpResponse:
    proof = getattr(request, "app_integrity", None)
    assert proof is None or isinstance(proof, DeviceProof)
    return JsonResponse(
        {
            "platform": proof.platform if proof else None,
            "decision": proof.decision if proof else None,
            "echo": request.body.decode(),
        }
    )


@protect()
def decorated_view(request: HttpRequest) -> HttpResponse:
    return view(request)


@protect(RoutePolicy(accept_limit=True))
async def decorated_async_view(request: HttpRequest) -> HttpResponse:
    return view(request)


urlpatterns = [
    path("buy", view),
    path("browse", view),
    path("open", view),
    path("decorated", decorated_view),
    path("decorated-async", decorated_async_view),
]


def post(client: Client, path: str, headers: dict[str, str], body: bytes) -> Any:
    return client.post(path, data=body, content_type="application/octet-stream", headers=headers)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(rig: Rig, case: Case, mode: Mode) -> None:
    options = {"PROTECTOR": rig.protector(mode), "ROUTES": ROUTES}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        client = Client()

        def send(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
            response = post(client, path, headers, body)
            return response.status_code, json.loads(response.content)

        run_case(rig, case, mode, send)


def test_decorators_work_without_the_middleware(rig: Rig) -> None:
    options = {"PROTECTOR": rig.protector(), "ROUTES": {}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], APP_INTEGRITY=options):
        client = Client()
        ok = post(client, "/decorated", rig.assertion_headers(), BODY)
        assert json.loads(ok.content) == {
            "platform": "ios",
            "decision": "allow",
            "echo": BODY.decode(),
        }
        missing = post(client, "/decorated", {}, BODY)
        assert (missing.status_code, json.loads(missing.content)["error"]["code"]) == (
            401,
            "token.missing",
        )
        limited = rig.play_headers(play_protect="HIGH_RISK")
        passed = post(client, "/decorated-async", limited, BODY)  # async view, accept_limit
        assert json.loads(passed.content)["decision"] == "limit"
        assert post(client, "/buy", {}, BODY).status_code == 200  # not decorated, no middleware
    assert rig.metrics.count(route="/decorated-async", reason="verified") == 1


def test_middleware_checks_a_decorated_view_once_with_its_policy(rig: Rig) -> None:
    options = {"PROTECTOR": rig.protector(), "ROUTES": {"/decorated": RoutePolicy()}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        response = post(Client(), "/decorated", rig.assertion_headers(), BODY)
        assert response.status_code == 200
    # Checked once: a second check would have replayed the assertion's counter.
    assert rig.counter() == 1
    assert rig.metrics.count(route="/decorated") == 1


def test_async_client_through_the_asgi_handler(rig: Rig) -> None:
    options = {"PROTECTOR": rig.protector(), "ROUTES": ROUTES}

    async def exchange() -> tuple[int, dict[str, object], int]:
        client = AsyncClient()
        ok = await client.post(
            "/decorated-async",
            data=BODY,
            content_type="application/octet-stream",
            headers=rig.assertion_headers(),
        )
        refused = await client.post("/buy", data=BODY, content_type="application/octet-stream")
        return ok.status_code, json.loads(ok.content), refused.status_code

    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        status, answer, refused = asyncio.run(exchange())
    assert (status, answer["platform"], answer["echo"]) == (200, "ios", BODY.decode())
    assert refused == 401


def test_settings_name_an_inline_verifier_with_mode_and_body_limit(rig: Rig) -> None:
    global SETTINGS_VERIFIER
    SETTINGS_VERIFIER = rig.verifier
    options = {
        "PROTECTOR": f"{__name__}.SETTINGS_VERIFIER",
        "MODE": "monitor",
        "MAX_BODY_BYTES": MAX_BODY,
        "ROUTES": {"/buy": {}, "/open": None},
    }
    metrics = default_metrics()
    before = metrics.count(route="/buy", mode="monitor", reason="missing", action="allowed")
    try:
        with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
            client = Client()
            watched = post(client, "/buy", {}, BODY)
            assert json.loads(watched.content)["platform"] is None  # monitor: let through
            big = b"x" * (MAX_BODY + 1)
            too_large = post(client, "/buy", rig.assertion_headers(big), big)
            assert too_large.status_code == 413
            ok = post(client, "/buy", rig.play_headers(), BODY)
            assert json.loads(ok.content)["platform"] == "android"
    finally:
        SETTINGS_VERIFIER = None
    after = metrics.count(route="/buy", mode="monitor", reason="missing", action="allowed")
    assert after - before == 1


def test_bad_mode_setting_is_a_config_error(rig: Rig) -> None:
    from appintegrity.errors import ConfigError

    options = {"PROTECTOR": rig.verifier, "MODE": "sometimes"}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, APP_INTEGRITY=options):
        with pytest.raises(ConfigError):
            post(Client(), "/buy", {}, BODY)
