"""The FastAPI shop, driven by test-kit devices whose tokens come from the real service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.conftest import RunningService, counted, tampered
from examples.fastapi_app.app import create_app

HEADER = "X-App-Integrity"


@pytest.fixture(scope="module")
def client(integrity_service: RunningService) -> Iterator[TestClient]:
    with TestClient(create_app(integrity_service.env())) as client:
        yield client


def error_code(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and body["error"]["message"], body
    code: str = body["error"]["code"]
    return code


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_missing_token_is_401_token_missing(client: TestClient) -> None:
    response = client.post("/purchases")
    assert (response.status_code, error_code(response)) == (401, "token.missing")
    assert response.headers["content-type"] == "application/json"


def test_iphone_token_buys_and_the_handler_sees_its_claims(
    client: TestClient, integrity_service: RunningService
) -> None:
    token = integrity_service.ios_token()
    response = client.post("/purchases", headers={HEADER: token})
    assert response.status_code == 200, response.text
    assert response.json()["app"] == {
        "id": integrity_service.ios_app,
        "platform": "ios",
        "decision": "allow",
        "debug": False,
    }


def test_android_token_buys(client: TestClient, integrity_service: RunningService) -> None:
    response = client.post("/purchases", headers={HEADER: integrity_service.android_token()})
    assert response.status_code == 200, response.text
    assert response.json()["app"]["id"] == integrity_service.android_app


def test_tampered_token_is_401_token_invalid(
    client: TestClient, integrity_service: RunningService
) -> None:
    token = tampered(integrity_service.ios_token())
    response = client.post("/purchases", headers={HEADER: token})
    assert (response.status_code, error_code(response)) == (401, "token.invalid")


def test_debug_token_reads_premium_but_cannot_buy(
    client: TestClient, integrity_service: RunningService
) -> None:
    token = integrity_service.debug_token()
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.debug_refused")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.text
    assert premium.json()["app"]["debug"] is True


def test_limit_decision_reads_premium_in_sd_but_cannot_buy(
    client: TestClient, integrity_service: RunningService
) -> None:
    token = integrity_service.android_token(play_protect="HIGH_RISK")
    premium = client.get("/premium", headers={HEADER: token})
    assert premium.status_code == 200, premium.text
    assert (premium.json()["quality"], premium.json()["app"]["decision"]) == ("sd", "limit")
    refused = client.post("/purchases", headers={HEADER: token})
    assert (refused.status_code, error_code(refused)) == (403, "token.limited_decision")


def test_limited_use_token_redeems_exactly_once(
    client: TestClient, integrity_service: RunningService
) -> None:
    token = integrity_service.ios_token(limited_use=True)
    first = client.post("/redeem", headers={HEADER: token})
    assert first.status_code == 200, first.text
    assert first.json()["credits"] == 50
    second = client.post("/redeem", headers={HEADER: token})
    assert (second.status_code, error_code(second)) == (409, "token.consumed")


def test_ordinary_token_cannot_redeem(
    client: TestClient, integrity_service: RunningService
) -> None:
    response = client.post("/redeem", headers={HEADER: integrity_service.ios_token()})
    assert (response.status_code, error_code(response)) == (403, "token.not_limited_use")


def test_monitor_mode_lets_a_missing_token_through_and_counts_it(
    integrity_service: RunningService,
) -> None:
    app = create_app(integrity_service.env(APPINTEGRITY_MODE="monitor"))
    labels = {"route": "/purchases", "mode": "monitor", "reason": "missing", "action": "allowed"}
    with TestClient(app) as client:
        before = counted(client.get("/metrics").text, **labels)
        response = client.post("/purchases")
        assert response.status_code == 200, response.text
        assert response.json() == {"purchased": True, "app": None}
        after = counted(client.get("/metrics").text, **labels)
    assert after - before == 1


def test_api_expecting_another_audience_refuses_the_token(
    integrity_service: RunningService,
) -> None:
    env = integrity_service.env(APPINTEGRITY_AUDIENCE="https://another-api.example")
    with TestClient(create_app(env)) as client:
        token = integrity_service.ios_token()
        response = client.post("/purchases", headers={HEADER: token})
    assert (response.status_code, error_code(response)) == (401, "token.invalid")
    assert "aud" in response.json()["error"]["message"]
