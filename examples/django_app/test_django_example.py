"""The Django shop, driven by test-kit devices whose tokens come from the real service."""

from __future__ import annotations

import json
from collections.abc import Iterator

import django
import pytest
from django.conf import settings

from examples.django_app import settings as shop_settings

# Django's settings are per process: configure them from the example's settings module
# unless another test module did first; each test below overrides what the shop needs.
SHOP_SETTINGS = {
    name: getattr(shop_settings, name) for name in dir(shop_settings) if name.isupper()
}
if not settings.configured:
    settings.configure(**SHOP_SETTINGS)
    django.setup()

from django.http import HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from examples.conftest import RunningService, counted, tampered  # noqa: E402

HEADER = "X-App-Integrity"


def shop_client(service: RunningService, **env: str) -> Iterator[Client]:
    options = shop_settings.app_integrity_from_env(service.env(**env))
    # What the shop needs (INSTALLED_APPS and DATABASES are empty and stay as they are).
    overrides = {name: SHOP_SETTINGS[name] for name in ("ROOT_URLCONF", "MIDDLEWARE")}
    overrides["ALLOWED_HOSTS"] = ["testserver"]
    with override_settings(**overrides, APP_INTEGRITY=options):
        yield Client()


@pytest.fixture(scope="module")
def client(integrity_service: RunningService) -> Iterator[Client]:
    yield from shop_client(integrity_service)


def body_of(response: HttpResponse) -> dict[str, object]:
    assert response["content-type"] == "application/json", response.content
    body: dict[str, object] = json.loads(response.content)
    return body


def error_code(response: HttpResponse) -> str:
    body = body_of(response)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and error["message"], body
    code: str = error["code"]
    return code


def test_health_needs_no_token(client: Client) -> None:
    assert body_of(client.get("/health")) == {"status": "ok"}


def test_missing_token_is_401_token_missing(client: Client) -> None:
    response = client.post("/purchases")
    assert (response.status_code, error_code(response)) == (401, "token.missing")


def test_iphone_token_buys_and_the_view_sees_its_claims(
    client: Client, integrity_service: RunningService
) -> None:
    token = integrity_service.ios_token()
    response = client.post("/purchases", headers={HEADER: token})
    assert response.status_code == 200, response.content
    assert body_of(response)["app"] == {
        "id": integrity_service.ios_app,
        "platform": "ios",
        "decision": "allow",
        "debug": False,
    }


def test_android_token_buys(client: Client, integrity_service: RunningService) -> None:
    response = client.post("/purchases", headers={HEADER: integrity_service.android_token()})
    assert response.status_code == 200, response.content
    app = body_of(response)["app"]
    assert isinstance(app, dict) and app["id"] == integrity_service.android_app


def test_tampered_token_is_401_token_invalid(
    client: Client, integrity_service: RunningService
) -> None:
    token = tampered(integrity_service.android_token())
    response = client.post("/purchases", headers={HEADER: token})
    assert (response.status_code, error_code(response)) == (401, "token.invalid")


def test_debug_token_reads_premium_but_cannot_buy(
    client: Client, integrity_service: RunningService
) -> None:
    token = integrity_service.debug_token(integrity_service.ios_app)
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.debug_refused")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.content
    assert body_of(premium)["app"] == {
        "id": integrity_service.ios_app,
        "platform": "ios",
        "decision": "allow",
        "debug": True,
    }


def test_limit_decision_reads_premium_in_sd_but_cannot_buy(
    client: Client, integrity_service: RunningService
) -> None:
    token = integrity_service.android_token(play_protect="HIGH_RISK")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.content
    assert body_of(premium)["quality"] == "sd"
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.limited_decision")


def test_limited_use_token_redeems_exactly_once(
    client: Client, integrity_service: RunningService
) -> None:
    token = integrity_service.ios_token(limited_use=True)
    first = client.post("/redeem", headers={HEADER: token})
    assert first.status_code == 200, first.content
    assert body_of(first)["credits"] == 50
    second = client.post("/redeem", headers={HEADER: token})
    assert (second.status_code, error_code(second)) == (409, "token.consumed")


def test_ordinary_token_cannot_redeem(client: Client, integrity_service: RunningService) -> None:
    response = client.post("/redeem", headers={HEADER: integrity_service.ios_token()})
    assert (response.status_code, error_code(response)) == (403, "token.not_limited_use")


def test_monitor_mode_lets_a_missing_token_through_and_counts_it(
    integrity_service: RunningService,
) -> None:
    labels = {"route": "/purchases", "mode": "monitor", "reason": "missing", "action": "allowed"}
    for client in shop_client(integrity_service, APPINTEGRITY_MODE="monitor"):
        before = counted(client.get("/metrics").content.decode(), **labels)
        response = client.post("/purchases")
        assert response.status_code == 200, response.content
        assert body_of(response) == {"purchased": True, "app": None}
        after = counted(client.get("/metrics").content.decode(), **labels)
        assert after - before == 1
