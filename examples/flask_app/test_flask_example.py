"""The Flask shop, driven by test-kit devices whose tokens come from the real service."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from examples.conftest import RunningService, counted, tampered
from examples.flask_app.app import create_app

HEADER = "X-App-Integrity"


@pytest.fixture(scope="module")
def client(integrity_service: RunningService) -> FlaskClient:
    return create_app(integrity_service.env()).test_client()


def error_code(response: TestResponse) -> str:
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["message"], body
    code: str = body["error"]["code"]
    return code


def test_health_needs_no_token(client: FlaskClient) -> None:
    assert client.get("/health").get_json() == {"status": "ok"}


def test_missing_token_is_401_token_missing(client: FlaskClient) -> None:
    response = client.post("/purchases")
    assert (response.status_code, error_code(response)) == (401, "token.missing")
    assert response.headers["content-type"] == "application/json"


def test_iphone_token_buys_and_the_view_sees_its_claims(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    token = integrity_service.ios_token()
    response = client.post("/purchases", headers={HEADER: token})
    assert response.status_code == 200, response.text
    assert response.get_json()["app"] == {
        "id": integrity_service.ios_app,
        "platform": "ios",
        "decision": "allow",
        "debug": False,
    }


def test_android_token_buys(client: FlaskClient, integrity_service: RunningService) -> None:
    response = client.post("/purchases", headers={HEADER: integrity_service.android_token()})
    assert response.status_code == 200, response.text
    assert response.get_json()["app"]["id"] == integrity_service.android_app


def test_tampered_token_is_401_token_invalid(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    token = tampered(integrity_service.ios_token())
    response = client.post("/purchases", headers={HEADER: token})
    assert (response.status_code, error_code(response)) == (401, "token.invalid")


def test_debug_token_reads_premium_but_cannot_buy(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    token = integrity_service.debug_token()
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.debug_refused")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.text
    assert premium.get_json()["app"]["debug"] is True


def test_limit_decision_reads_premium_in_sd_but_cannot_buy(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    token = integrity_service.android_token(play_protect="HIGH_RISK")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.text
    body = premium.get_json()
    assert (body["quality"], body["app"]["decision"]) == ("sd", "limit")
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.limited_decision")


def test_limited_use_token_redeems_exactly_once(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    token = integrity_service.android_token(limited_use=True)
    first = client.post("/redeem", headers={HEADER: token})
    assert first.status_code == 200, first.text
    assert first.get_json()["credits"] == 50
    second = client.post("/redeem", headers={HEADER: token})
    assert (second.status_code, error_code(second)) == (409, "token.consumed")


def test_ordinary_token_cannot_redeem(
    client: FlaskClient, integrity_service: RunningService
) -> None:
    response = client.post("/redeem", headers={HEADER: integrity_service.android_token()})
    assert (response.status_code, error_code(response)) == (403, "token.not_limited_use")


def test_monitor_mode_lets_a_missing_token_through_and_counts_it(
    integrity_service: RunningService,
) -> None:
    client = create_app(integrity_service.env(APPINTEGRITY_MODE="monitor")).test_client()
    labels = {"route": "/purchases", "mode": "monitor", "reason": "missing", "action": "allowed"}
    before = counted(client.get("/metrics").text, **labels)
    response = client.post("/purchases")
    assert response.status_code == 200, response.text
    assert response.get_json() == {"purchased": True, "app": None}
    after = counted(client.get("/metrics").text, **labels)
    assert after - before == 1
