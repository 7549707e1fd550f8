"""Android apps that could not get a Play Integrity token report Play's error code instead,
over real HTTP: the app's configured action decides, and every answer names the code and the
remedy (``clientError``) instead of an opaque refusal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from appintegrity.testing.client import ServiceRefusal

from .conftest import ANDROID_APP, Kit, Service, error_of, running

LIMIT_APP = "com.example.limit"  # client_error_action = "limit"
SPLIT_APP = "com.example.split"  # block, but retryable errors are limited
MONITOR_APP = "com.example.monitor"  # block, in monitor mode
ASSERTIONS = "/v1/assertions"


@pytest.fixture(scope="module")
def service(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The kit's service with three more Android apps, one per client-error setting."""
    directory = tmp_path_factory.mktemp("client-errors")
    raw = kit.raw_config()
    raw["server"]["store"] = f"sqlite:///{directory / 'service.db'}"
    keys = {
        "decryption_key": kit.play_keys.decryption_key_b64,
        "verification_key": kit.play_keys.verification_key_b64,
    }
    raw["apps"] += [
        {"id": LIMIT_APP, "platform": "android", "client_error_action": "limit", **keys},
        {
            "id": SPLIT_APP,
            "platform": "android",
            "retryable_client_error_action": "limit",
            **keys,
        },
        {"id": MONITOR_APP, "platform": "android", "mode": "monitor", **keys},
    ]
    with running(kit, kit.config(raw)) as service:
        yield service


def report(service: Service, code: object, app_id: str = ANDROID_APP, **extra: Any) -> Any:
    """An errorCode report over a fresh challenge (``code`` is sent as given, any type)."""
    body = service.integrity.android_assertion_request(
        service.kit.android(), payload={"action": "redeem"}, app_id=app_id, error_code=-1
    )
    return {**body, "errorCode": code, **extra}


# -- block (the default) -----------------------------------------------------------------------


def test_a_final_error_is_refused_with_the_code_and_the_remedy(service: Service) -> None:
    response = service.post(ASSERTIONS, report(service, -15))
    assert response.status_code == 403
    assert error_of(response) == "google.client_error"
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["clientError"] == {
        "code": -15,
        "name": "PLAY_SERVICES_VERSION_OUTDATED",
        "retryable": False,
        "resolvedBy": "user",
        "remediation": "ask the user to update Google Play services",
    }
    assert "-15 PLAY_SERVICES_VERSION_OUTDATED" in error["message"]


@pytest.mark.parametrize(
    ("code", "name"),
    [(-3, "NETWORK_ERROR"), (-8, "TOO_MANY_REQUESTS"), (-12, "GOOGLE_SERVER_UNAVAILABLE")],
)
def test_a_retryable_error_is_refused_with_retry_after(
    service: Service, code: int, name: str
) -> None:
    response = service.post(ASSERTIONS, report(service, code))
    assert response.status_code == 403
    assert error_of(response) == "google.client_error"
    assert response.headers["retry-after"] == "5"
    client_error = response.json()["error"]["clientError"]
    assert client_error["name"] == name
    assert client_error["retryable"] is True
    assert client_error["resolvedBy"] == "app"
    assert client_error["retryAfterSeconds"] == 5
    assert "5, 10, 20 s" in client_error["remediation"]


def test_an_invalid_provider_is_retryable_at_once(service: Service) -> None:
    response = service.post(ASSERTIONS, report(service, -19))
    assert response.status_code == 403
    assert "retry-after" not in response.headers
    client_error = response.json()["error"]["clientError"]
    assert client_error["name"] == "INTEGRITY_TOKEN_PROVIDER_INVALID"
    assert client_error["retryable"] is True
    assert "retryAfterSeconds" not in client_error


def test_an_unknown_code_is_named_unknown_not_a_server_error(service: Service) -> None:
    response = service.post(ASSERTIONS, report(service, -4242))
    assert response.status_code == 403
    client_error = response.json()["error"]["clientError"]
    assert (client_error["code"], client_error["name"]) == (-4242, "UNKNOWN")
    assert client_error["retryable"] is False


def test_classic_codes_are_read_from_the_classic_table(service: Service) -> None:
    classic = service.post(ASSERTIONS, report(service, -17, requestType="classic"))
    assert classic.status_code == 403
    assert classic.json()["error"]["clientError"]["name"] == "CLIENT_TRANSIENT_ERROR"
    assert classic.headers["retry-after"] == "5"
    standard = service.post(ASSERTIONS, report(service, -17, requestType="standard"))
    assert standard.json()["error"]["clientError"]["name"] == "REQUEST_HASH_TOO_LONG"
    assert "retry-after" not in standard.headers


# -- limit, split, monitor ---------------------------------------------------------------------


def test_limit_answers_a_limited_token_that_says_why(service: Service) -> None:
    response = service.post(ASSERTIONS, report(service, -15, app_id=LIMIT_APP))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["decision"] == "limit"
    assert answer["reasons"] == ["google.client_error"]
    assert answer["clientError"]["name"] == "PLAY_SERVICES_VERSION_OUTDATED"
    claims = service.integrity.verify_token(answer["appToken"])
    assert claims["decision"] == "limit"
    assert claims["reasons"] == ["google.client_error"]
    assert claims["sub"] == LIMIT_APP
    assert claims["platform"] == "android"


def test_retryable_errors_can_cost_less_than_final_ones(service: Service) -> None:
    transient = service.post(ASSERTIONS, report(service, -3, app_id=SPLIT_APP))
    assert transient.status_code == 200, transient.text
    assert transient.json()["decision"] == "limit"
    assert transient.json()["clientError"]["retryAfterSeconds"] == 5
    attack = service.post(ASSERTIONS, report(service, -7, app_id=SPLIT_APP))
    assert attack.status_code == 403
    assert error_of(attack) == "google.client_error"
    assert attack.json()["error"]["clientError"]["resolvedBy"] == "nobody"


def test_monitor_mode_answers_a_block_token_and_counts_it(service: Service) -> None:
    response = service.post(ASSERTIONS, report(service, -5, app_id=MONITOR_APP))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["decision"] == "block"
    assert answer["reasons"] == ["google.client_error"]
    assert answer["clientError"]["name"] == "APP_NOT_INSTALLED"
    assert service.integrity.verify_token(answer["appToken"])["decision"] == "block"
    assert _count(service, "block_monitored") >= 1


def test_enforced_blocks_are_counted_with_their_reason(service: Service) -> None:
    before = _count(service, "block")
    service.post(ASSERTIONS, report(service, -1))
    assert _count(service, "block") == before + 1


def _count(service: Service, outcome: str) -> float:
    text = service.client.get("/metrics").text
    labels = (
        'platform="android"',
        'kind="assertion"',
        f'outcome="{outcome}"',
        'reason="google.client_error"',
    )
    for line in text.splitlines():
        if line.startswith("appintegrity_verifications_total{") and all(
            label in line for label in labels
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- one report per challenge ------------------------------------------------------------------


@pytest.mark.parametrize("app_id", [ANDROID_APP, LIMIT_APP])
def test_a_report_consumes_its_challenge(service: Service, app_id: str) -> None:
    body = report(service, -8, app_id=app_id)
    first = service.post(ASSERTIONS, body)
    assert first.status_code in (200, 403)
    replay = service.post(ASSERTIONS, body)
    assert replay.status_code == 409
    assert error_of(replay) == "challenge.consumed"


def test_a_report_without_a_live_challenge_is_refused(service: Service) -> None:
    body = report(service, -8, app_id=LIMIT_APP)
    body["payload"] = '{"action": "redeem", "challenge": "never-issued-by-this-server"}'
    response = service.post(ASSERTIONS, body)
    assert response.status_code == 404
    assert error_of(response) == "challenge.unknown"


# -- the wire contract -------------------------------------------------------------------------


def test_token_and_error_code_together_are_refused(service: Service) -> None:
    body = service.android_body()
    body["errorCode"] = -8
    response = service.post(ASSERTIONS, body)
    assert response.status_code == 400
    assert error_of(response) == "request.invalid"
    assert "exactly one of token and errorCode" in response.json()["error"]["message"]


def test_neither_token_nor_error_code_is_refused(service: Service) -> None:
    body = service.android_body()
    del body["token"]
    response = service.post(ASSERTIONS, body)
    assert response.status_code == 400
    assert error_of(response) == "request.invalid"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("-8", {}),
        (-8.0, {}),
        (True, {}),
        (None, {}),
        ([-8], {}),
        (0, {}),
        (2**31, {}),
        (-(2**31) - 1, {}),
        (-8, {"requestType": "instant"}),
        (-8, {"requestType": 1}),
        (-8, {"errorMessage": "extra members are refused"}),
    ],
)
def test_wrong_types_are_refused(service: Service, code: object, extra: dict[str, Any]) -> None:
    body = report(service, code, **extra)
    response = service.post(ASSERTIONS, body)
    assert response.status_code == 400, response.text
    assert error_of(response) == "request.invalid"
    # Nothing was consumed: the same challenge still takes a valid report.
    body.update(errorCode=-8, requestType="standard")
    body.pop("errorMessage", None)
    assert service.post(ASSERTIONS, body).status_code == 403


def test_request_type_without_an_error_code_is_refused(service: Service) -> None:
    body = {**service.android_body(), "requestType": "standard"}
    response = service.post(ASSERTIONS, body)
    assert response.status_code == 400
    assert error_of(response) == "request.invalid"


def test_the_openapi_schema_describes_reports(service: Service) -> None:
    schemas = service.client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["AndroidAssertionRequest"]["properties"]
    assert {"token", "errorCode", "requestType"} <= set(request)
    assert "token" not in schemas["AndroidAssertionRequest"].get("required", [])
    assert "clientError" in schemas["ErrorDetail"]["properties"]
    assert "clientError" in schemas["AssertionResponse"]["properties"]
    assert {"code", "name", "retryable", "resolvedBy", "remediation", "retryAfterSeconds"} == set(
        schemas["ClientErrorInfo"]["properties"]
    )


# -- the test kit's client ---------------------------------------------------------------------


def test_the_client_reports_an_error_code_and_reads_the_refusal(service: Service) -> None:
    with pytest.raises(ServiceRefusal) as refused:
        service.integrity.assert_android(service.kit.android(), error_code=-8, app_id=ANDROID_APP)
    assert refused.value.status == 403
    assert refused.value.code == "google.client_error"
    assert refused.value.retry_after == 5
    assert refused.value.client_error is not None
    assert refused.value.client_error["name"] == "TOO_MANY_REQUESTS"


def test_the_client_gets_a_limited_token_for_a_report(service: Service) -> None:
    token = service.integrity.assert_android(service.kit.android(), error_code=-3, app_id=LIMIT_APP)
    assert token.decision == "limit"
    assert token.reasons == ("google.client_error",)
    assert token.client_error is not None and token.client_error["code"] == -3


def test_the_client_sends_classic_reports_with_their_request_type(service: Service) -> None:
    body = service.integrity.android_assertion_request(
        service.kit.android(), error_code=-17, classic=True
    )
    assert body["errorCode"] == -17 and body["requestType"] == "classic"
    assert "token" not in body
    with pytest.raises(TypeError):
        service.integrity.android_assertion_request(
            service.kit.android(), error_code=-8, play_protect="HIGH_RISK"
        )
