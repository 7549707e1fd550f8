"""Every endpoint and every error code over real HTTP, with test-kit devices."""

from __future__ import annotations

import base64
import json
import logging
import re

import pytest

from appintegrity.tokens import AppTokenVerifier, StaticJwks

from .conftest import ANDROID_APP, IOS_APP, IOS_DEV_APP, Service, error_of


def verifier_for(service: Service) -> AppTokenVerifier:
    jwks = service.client.get("/.well-known/jwks.json").json()
    return AppTokenVerifier(
        StaticJwks(jwks), issuer="https://integrity.test", audience="https://integrity.test"
    )


# -- challenges ----------------------------------------------------------------------------------


def test_challenge_is_256_random_bits_base64url_with_expiry(service: Service) -> None:
    response = service.post("/v1/challenges", {"purpose": "attestation"})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["challenge"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expiresAt"])
    assert service.challenge() != service.challenge()


def test_challenge_without_a_body_is_issued(service: Service) -> None:
    assert service.post("/v1/challenges").status_code == 201


@pytest.mark.parametrize(
    "body",
    [{"purpose": "everything"}, {"keyId": "not a key"}, {"keyId": 7}, {"purpose": 1}, [1]],
)
def test_challenge_request_with_bad_fields_is_request_invalid(
    service: Service, body: object
) -> None:
    response = service.post("/v1/challenges", body)
    assert response.status_code == 400
    assert error_of(response) == "request.invalid"


# -- registrations -------------------------------------------------------------------------------


def test_registration_stores_the_key_and_returns_a_verifiable_app_token(service: Service) -> None:
    phone = service.kit.iphone()
    body = service.registration_body(phone)
    response = service.post("/v1/registrations", body)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["keyId"] == body["keyId"]
    assert result["environment"] == "production"
    claims = verifier_for(service).verify(result["appToken"])
    assert claims.subject == IOS_APP
    assert claims.platform == "ios"
    assert claims.decision == "allow"
    assert claims.device == body["keyId"]


def test_registration_accepts_a_hex_key_id_and_answers_the_canonical_one(
    service: Service,
) -> None:
    phone = service.kit.iphone()
    key_id = phone.generate_key()
    body = service.registration_body(phone, key_id)
    body["keyId"] = base64.b64decode(key_id).hex()
    response = service.post("/v1/registrations", body)
    assert response.status_code == 201, response.text
    assert response.json()["keyId"] == key_id


def test_registration_with_the_raw_challenge_bytes_as_client_data_hash(service: Service) -> None:
    """Apps that pass the server's 32 random bytes to attestKey unhashed (Apple's samples)."""
    phone = service.kit.iphone()
    key_id = phone.generate_key()
    challenge = service.challenge("attestation")
    raw = base64.urlsafe_b64decode(challenge + "=")
    body = service.registration_body(phone, key_id, challenge=challenge)
    body["token"] = base64.b64encode(phone.attest_key(key_id, client_data_hash=raw)).decode()
    response = service.post("/v1/registrations", body)
    assert response.status_code == 201, response.text


def test_development_app_registers_in_development(service: Service) -> None:
    phone = service.kit.iphone(IOS_DEV_APP, environment="development")
    response = service.post("/v1/registrations", service.registration_body(phone))
    assert response.status_code == 201, response.text
    assert response.json()["environment"] == "development"


def test_registering_a_key_twice_is_key_exists(service: Service) -> None:
    phone, key_id = service.register()
    response = service.post("/v1/registrations", service.registration_body(phone, key_id))
    assert (response.status_code, error_of(response)) == (409, "key.exists")


def test_registration_challenge_is_single_use_even_after_a_failure(service: Service) -> None:
    phone = service.kit.iphone()
    challenge = service.challenge("attestation")
    bad = service.registration_body(phone, challenge=challenge, defect="wrong_nonce")
    first = service.post("/v1/registrations", bad)
    assert (first.status_code, error_of(first)) == (401, "apple.nonce_mismatch")
    good = service.registration_body(phone, challenge=challenge)
    second = service.post("/v1/registrations", good)
    assert (second.status_code, error_of(second)) == (409, "challenge.consumed")


def test_unknown_challenge_is_challenge_unknown(service: Service) -> None:
    phone = service.kit.iphone()
    body = service.registration_body(phone, challenge="never-issued-challenge-value")
    response = service.post("/v1/registrations", body)
    assert (response.status_code, error_of(response)) == (404, "challenge.unknown")


@pytest.mark.parametrize("challenge", ["\ud800", "nul\u0000in-the-challenge-value", "é" * 43, "x"])
def test_challenge_that_cannot_have_been_issued_is_unknown_before_the_store(
    service: Service, challenge: str
) -> None:
    """A lone surrogate or a NUL is not even storable text: refused as challenge.unknown
    (never a 500), in a registration and inside either platform's assertion payload."""
    phone = service.kit.iphone()
    registration = service.registration_body(phone, challenge="placeholder")
    registration["challenge"] = challenge
    ios_phone, key_id = service.register()
    payload = json.dumps({"challenge": challenge})
    ios = service.assertion_body(ios_phone, key_id, payload=payload)
    android = service.android_body()
    android["payload"] = payload
    for path, body in (
        ("/v1/registrations", registration),
        ("/v1/assertions", ios),
        ("/v1/assertions", android),
    ):
        # json.dumps escapes a lone surrogate as \ud800, as a JavaScript client would send it.
        response = service.client.post(
            path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        found = (response.status_code, error_of(response))
        # The JSON body itself cannot carry a lone surrogate as text: pydantic refuses it.
        if path == "/v1/registrations" and challenge == "\ud800":
            assert found == (400, "request.invalid")
        else:
            assert found == (404, "challenge.unknown"), path


def test_expired_challenge_is_challenge_expired(service: Service) -> None:
    phone = service.kit.iphone()
    challenge = service.challenge("attestation")
    service.clock.advance(seconds=301)
    response = service.post(
        "/v1/registrations", service.registration_body(phone, challenge=challenge)
    )
    assert (response.status_code, error_of(response)) == (401, "challenge.expired")


def test_assertion_challenge_cannot_register_a_key(service: Service) -> None:
    phone = service.kit.iphone()
    body = service.registration_body(phone, challenge=service.challenge("assertion"))
    response = service.post("/v1/registrations", body)
    assert (response.status_code, error_of(response)) == (400, "challenge.mismatch")


@pytest.mark.parametrize(
    ("defect", "status", "code"),
    [
        ("untrusted_chain", 401, "apple.certificate_chain_invalid"),
        ("expired_leaf", 401, "apple.certificate_chain_invalid"),
        ("wrong_nonce", 401, "apple.nonce_mismatch"),
        ("wrong_key_id", 401, "apple.key_id_mismatch"),
        ("wrong_rp_id", 401, "apple.app_id_mismatch"),
        ("nonzero_counter", 409, "apple.counter_invalid"),
        ("wrong_environment", 401, "apple.environment_mismatch"),
        ("wrong_credential_id", 401, "apple.credential_id_mismatch"),
        ("wrong_format", 401, "apple.unsupported_format"),
        ("truncated_auth_data", 400, "apple.malformed"),
    ],
)
def test_each_attestation_defect_is_refused_with_its_reason(
    service: Service, defect: str, status: int, code: str
) -> None:
    phone = service.kit.iphone()
    response = service.post("/v1/registrations", service.registration_body(phone, defect=defect))
    assert (response.status_code, error_of(response)) == (status, code)


def test_attestation_that_is_not_base64_is_apple_malformed(service: Service) -> None:
    phone = service.kit.iphone()
    body = service.registration_body(phone)
    body["token"] = "*** not base64 ***"
    response = service.post("/v1/registrations", body)
    assert (response.status_code, error_of(response)) == (400, "apple.malformed")


# -- iOS assertions ------------------------------------------------------------------------------


def test_assertion_over_a_json_payload_advances_the_counter(service: Service) -> None:
    phone, key_id = service.register()
    for expected in (1, 2):
        response = service.post("/v1/assertions", service.assertion_body(phone, key_id))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["decision"] == "allow"
        assert body["counter"] == expected
        assert body["reasons"] == []
        claims = verifier_for(service).verify(body["appToken"])
        assert (claims.subject, claims.limited_use) == (IOS_APP, False)


def test_assertion_whose_payload_is_the_challenge_itself(service: Service) -> None:
    phone, key_id = service.register()
    payload = service.challenge("assertion")
    response = service.post(
        "/v1/assertions", service.assertion_body(phone, key_id, payload=payload)
    )
    assert response.status_code == 200, response.text


def test_replayed_assertion_is_refused(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    assert service.post("/v1/assertions", body).status_code == 200
    replay = service.post("/v1/assertions", body)
    assert (replay.status_code, error_of(replay)) == (409, "challenge.consumed")


def test_tampered_payload_is_signature_invalid(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    payload = json.loads(body["payload"])
    payload["credits"] = 5000
    body["payload"] = json.dumps(payload)
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (401, "apple.signature_invalid")


def test_assertion_counter_that_did_not_rise_is_counter_invalid(service: Service) -> None:
    phone, key_id = service.register()
    assert service.post("/v1/assertions", service.assertion_body(phone, key_id)).status_code == 200
    body = service.assertion_body(phone, key_id, defect="replayed_counter")
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (409, "apple.counter_invalid")


def test_assertion_from_another_key_is_signature_invalid(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id, defect="bad_signature")
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (401, "apple.signature_invalid")


def test_assertion_for_an_unregistered_key_is_key_unknown(service: Service) -> None:
    phone = service.kit.iphone()
    key_id = phone.generate_key()
    response = service.post("/v1/assertions", service.assertion_body(phone, key_id))
    assert (response.status_code, error_of(response)) == (404, "key.unknown")


def test_assertion_with_a_revoked_key_is_key_revoked(service: Service) -> None:
    phone, key_id = service.register()
    path = f"/v1/admin/keys/{key_id.replace('/', '_').replace('+', '-')}/revoke"
    revoked = service.post(path, headers=service.admin())
    assert revoked.status_code == 200, revoked.text
    response = service.post("/v1/assertions", service.assertion_body(phone, key_id))
    assert (response.status_code, error_of(response)) == (403, "key.revoked")


def test_challenge_bound_to_another_key_is_refused(service: Service) -> None:
    phone, key_id = service.register()
    _, other_key = service.register()
    bound = service.challenge("assertion", key_id=other_key)
    response = service.post(
        "/v1/assertions", service.assertion_body(phone, key_id, challenge=bound)
    )
    assert (response.status_code, error_of(response)) == (400, "challenge.mismatch")
    own = service.challenge("assertion", key_id=key_id)
    ok = service.post("/v1/assertions", service.assertion_body(phone, key_id, challenge=own))
    assert ok.status_code == 200, ok.text


def test_payload_without_a_challenge_member_is_request_invalid(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id, payload=json.dumps({"action": "redeem"}))
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "request.invalid")


# -- limited-use tokens and /v1/tokens/verify ----------------------------------------------------


def test_limited_use_token_is_consumed_exactly_once(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id, limitedUse=True)
    token = service.post("/v1/assertions", body).json()["appToken"]
    checked = service.post("/v1/tokens/verify", {"token": token})
    assert checked.status_code == 200
    assert checked.json()["valid"] is True
    assert checked.json()["claims"]["limited_use"] is True
    first = service.post("/v1/tokens/verify", {"token": token, "consume": True})
    assert first.status_code == 200, first.text
    second = service.post("/v1/tokens/verify", {"token": token, "consume": True})
    assert (second.status_code, error_of(second)) == (409, "token.consumed")


def test_consuming_an_ordinary_token_is_not_limited_use(service: Service) -> None:
    token = service.post("/v1/assertions", service.assertion_body(*service.register())).json()[
        "appToken"
    ]
    response = service.post("/v1/tokens/verify", {"token": token, "consume": True})
    assert (response.status_code, error_of(response)) == (400, "token.not_limited_use")


def test_forged_token_is_token_invalid(service: Service) -> None:
    token = service.post("/v1/assertions", service.assertion_body(*service.register())).json()[
        "appToken"
    ]
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    response = service.post("/v1/tokens/verify", {"token": forged})
    assert (response.status_code, error_of(response)) == (401, "token.invalid")
    garbage = service.post("/v1/tokens/verify", {"token": "x.y.z"})
    assert (garbage.status_code, error_of(garbage)) == (401, "token.invalid")


def test_expired_token_is_token_expired(service: Service) -> None:
    token = service.post("/v1/assertions", service.assertion_body(*service.register())).json()[
        "appToken"
    ]
    service.clock.advance(seconds=600 + 31)
    response = service.post("/v1/tokens/verify", {"token": token})
    assert (response.status_code, error_of(response)) == (401, "token.expired")


# -- Android -------------------------------------------------------------------------------------


def test_android_standard_request_is_allowed(service: Service) -> None:
    response = service.post("/v1/assertions", service.android_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["decision"], body["reasons"]) == ("allow", [])
    assert "counter" not in body
    claims = verifier_for(service).verify(body["appToken"])
    assert (claims.subject, claims.platform, claims.decision) == (ANDROID_APP, "android", "allow")


def test_android_rule_that_is_only_watched_is_counted_and_logged(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """High device activity is 'ignore' by default: the decision stays allow, but what
    enforcing the rule would cost is visible in the metrics and the log."""

    def watched() -> float:
        text = service.client.get("/metrics").text
        label = 'platform="android",reason="google.device_activity_high"'
        found = re.search(
            r"appintegrity_policy_monitored_total\{" + re.escape(label) + r"\} (\S+)", text
        )
        return float(found.group(1)) if found else 0.0

    before = watched()
    device = service.kit.android(device_activity="LEVEL_4")
    with caplog.at_level(logging.INFO, logger="appintegrity"):
        response = service.post("/v1/assertions", service.android_body(device))
    assert response.status_code == 200, response.text
    assert (response.json()["decision"], response.json()["reasons"]) == ("allow", [])
    assert watched() == before + 1
    assert any(
        "policy monitored" in r.getMessage() and "google.device_activity_high" in r.getMessage()
        for r in caplog.records
    )


def test_android_classic_nonce_is_accepted(service: Service) -> None:
    response = service.post("/v1/assertions", service.android_body(classic=True))
    assert response.status_code == 200, response.text


def test_android_tampered_payload_is_request_hash_mismatch(service: Service) -> None:
    body = service.android_body()
    payload = json.loads(body["payload"])
    payload["action"] = "withdraw"
    body["payload"] = json.dumps(payload)
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (401, "google.request_hash_mismatch")


def test_android_replayed_token_is_refused(service: Service) -> None:
    body = service.android_body()
    assert service.post("/v1/assertions", body).status_code == 200
    replay = service.post("/v1/assertions", body)
    assert (replay.status_code, error_of(replay)) == (409, "challenge.consumed")


def test_android_device_without_integrity_is_blocked_with_reasons(service: Service) -> None:
    body = service.android_body(device_labels=None)
    response = service.post("/v1/assertions", body)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "decision.blocked"
    assert error["reasons"] == ["google.device_integrity_insufficient"]


def test_android_play_protect_risk_is_limited(service: Service) -> None:
    response = service.post("/v1/assertions", service.android_body(play_protect="HIGH_RISK"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["decision"], body["reasons"]) == ("limit", ["google.play_protect_risk"])
    claims = verifier_for(service).verify(body["appToken"])
    assert claims.decision == "limit"


def test_android_stale_token_is_refused(service: Service) -> None:
    response = service.post("/v1/assertions", service.android_body(age_seconds=3600))
    assert (response.status_code, error_of(response)) == (401, "google.stale")


def test_android_garbage_token_is_google_malformed(service: Service) -> None:
    body = service.android_body()
    body["token"] = "not-a-jwe"
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "google.malformed")


def test_android_token_under_other_keys_is_decryption_failed(service: Service) -> None:
    from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice

    stranger = SoftwareAndroidDevice(ANDROID_APP, keys=PlayIntegrityTestKeys.generate())
    response = service.post("/v1/assertions", service.android_body(stranger))
    assert (response.status_code, error_of(response)) == (401, "google.decryption_failed")


def test_android_unknown_app_id_is_app_unknown(service: Service) -> None:
    body = service.android_body()
    body["appId"] = "com.example.other"
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (404, "app.unknown")


# -- debug tokens --------------------------------------------------------------------------------


def create_debug(service: Service, app_id: str) -> dict[str, str]:
    response = service.post(
        "/v1/admin/debug-tokens", {"appId": app_id, "name": "CI"}, headers=service.admin()
    )
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


def test_debug_token_exchange_issues_a_debug_app_token(service: Service) -> None:
    created = create_debug(service, IOS_APP)
    response = service.post(
        "/v1/debug/exchange", {"appId": IOS_APP, "debugToken": created["secret"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["decision"], body["debug"]) == ("allow", True)
    claims = verifier_for(service).verify(body["appToken"])
    assert (claims.debug, claims.subject) == (True, IOS_APP)
    listed = service.client.get("/v1/admin/debug-tokens", headers=service.admin()).json()
    assert created["tokenId"] in [t["tokenId"] for t in listed["tokens"]]
    assert "secret" not in json.dumps(listed)


def test_revoked_debug_token_is_refused(service: Service) -> None:
    created = create_debug(service, ANDROID_APP)
    revoke = service.post(
        f"/v1/admin/debug-tokens/{created['tokenId']}/revoke", headers=service.admin()
    )
    assert revoke.status_code == 200
    response = service.post(
        "/v1/debug/exchange", {"appId": ANDROID_APP, "debugToken": created["secret"]}
    )
    assert (response.status_code, error_of(response)) == (403, "token.debug_refused")


def test_unknown_debug_token_is_token_invalid(service: Service) -> None:
    response = service.post("/v1/debug/exchange", {"appId": IOS_APP, "debugToken": "guess"})
    assert (response.status_code, error_of(response)) == (401, "token.invalid")


def test_debug_token_of_another_app_is_token_invalid(service: Service) -> None:
    created = create_debug(service, IOS_APP)
    response = service.post(
        "/v1/debug/exchange", {"appId": ANDROID_APP, "debugToken": created["secret"]}
    )
    assert (response.status_code, error_of(response)) == (401, "token.invalid")


def test_revoking_an_unknown_debug_token_is_debug_token_unknown(service: Service) -> None:
    response = service.post("/v1/admin/debug-tokens/dt_nope/revoke", headers=service.admin())
    assert (response.status_code, error_of(response)) == (404, "debug_token.unknown")


def _debug_count(service: Service, outcome: str, reason: str) -> float:
    text = service.client.get("/metrics").text
    labels = f'kind="debug",outcome="{outcome}",platform="ios",reason="{reason}"'
    pattern = r"appintegrity_verifications_total\{" + re.escape(labels) + r"\} ([0-9.]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_debug_exchanges_are_counted_and_logged_without_the_secret(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    created = create_debug(service, IOS_APP)
    allowed = _debug_count(service, "allow", "")
    refused = _debug_count(service, "refused", "token.invalid")
    with caplog.at_level(logging.INFO, logger="appintegrity"):
        ok = service.post("/v1/debug/exchange", {"appId": IOS_APP, "debugToken": created["secret"]})
        bad = service.post("/v1/debug/exchange", {"appId": IOS_APP, "debugToken": "guess"})
    assert (ok.status_code, bad.status_code) == (200, 401)
    assert _debug_count(service, "allow", "") == allowed + 1
    assert _debug_count(service, "refused", "token.invalid") == refused + 1
    assert any(created["tokenId"] in r.getMessage() for r in caplog.records)
    assert not any(created["secret"] in r.getMessage() for r in caplog.records)


def test_admin_key_list_says_when_it_is_truncated(service: Service) -> None:
    for _ in range(3):
        service.register()
    one = service.client.get("/v1/admin/keys?limit=1", headers=service.admin()).json()
    assert (len(one["keys"]), one["truncated"]) == (1, True)
    every = service.client.get("/v1/admin/keys?limit=10000", headers=service.admin()).json()
    assert every["truncated"] is False and len(every["keys"]) >= 3
    refused = service.client.get("/v1/admin/keys?limit=0", headers=service.admin())
    assert (refused.status_code, error_of(refused)) == (400, "request.invalid")


def test_debug_tokens_turned_off_for_an_app(service: Service) -> None:
    response = service.post("/v1/debug/exchange", {"appId": IOS_DEV_APP, "debugToken": "x"})
    assert (response.status_code, error_of(response)) == (403, "token.debug_refused")


def test_debug_exchange_for_an_unknown_app_is_app_unknown(service: Service) -> None:
    response = service.post("/v1/debug/exchange", {"appId": "no.such.app", "debugToken": "x"})
    assert (response.status_code, error_of(response)) == (404, "app.unknown")


# -- signing keys, JWKS, admin -------------------------------------------------------------------


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    service: Service,
) -> None:
    old_token = service.post("/v1/assertions", service.assertion_body(*service.register())).json()[
        "appToken"
    ]
    old_kid = verifier_for(service).verify(old_token).key_id
    rotated = service.post("/v1/admin/signing-keys/rotate", headers=service.admin())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["next"]  # published at once, signing after the publish delay
    assert new_kid not in (None, old_kid)
    kids = [k["kid"] for k in service.client.get("/.well-known/jwks.json").json()["keys"]]
    assert old_kid in kids and new_kid in kids
    assert service.post("/v1/tokens/verify", {"token": old_token}).status_code == 200
    service.clock.advance(seconds=1)  # past the publish delay (two 0.2 s refreshes)
    new_token = service.post("/v1/assertions", service.assertion_body(*service.register())).json()[
        "appToken"
    ]
    assert verifier_for(service).verify(new_token).key_id == new_kid
    assert verifier_for(service).verify(old_token).key_id == old_kid


def test_jwks_is_cacheable_json(service: Service) -> None:
    response = service.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "max-age=" in response.headers["cache-control"]
    for key in response.json()["keys"]:
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert "d" not in key


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": "Basic x"}]
)
def test_admin_api_needs_the_admin_key(service: Service, headers: dict[str, str]) -> None:
    response = service.post("/v1/admin/signing-keys/rotate", headers=headers)
    assert (response.status_code, error_of(response)) == (401, "auth.unauthorized")


def test_admin_lists_registered_keys(service: Service) -> None:
    _, key_id = service.register()
    response = service.client.get(
        "/v1/admin/keys", params={"appId": IOS_APP}, headers=service.admin()
    )
    assert response.status_code == 200
    assert key_id in [k["keyId"] for k in response.json()["keys"]]
    unknown = service.post("/v1/admin/keys/" + "A" * 43 + "=/revoke", headers=service.admin())
    assert (unknown.status_code, error_of(unknown)) == (404, "key.unknown")


# -- operations ----------------------------------------------------------------------------------


def test_healthz_is_ok(service: Service) -> None:
    response = service.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_metrics_count_verifications_by_platform_outcome_and_reason(service: Service) -> None:
    phone = service.kit.iphone()
    service.post("/v1/registrations", service.registration_body(phone, defect="wrong_nonce"))
    text = service.client.get("/metrics").text
    assert re.search(
        r'appintegrity_verifications_total\{kind="registration",outcome="refused",'
        r'platform="ios",reason="apple.nonce_mismatch"\} [1-9]',
        text,
    ), text
    assert "appintegrity_request_duration_seconds_bucket" in text
    assert 'route="/v1/registrations"' in text


def test_openapi_describes_every_endpoint_and_the_error_schema(service: Service) -> None:
    schema = service.client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/v1/challenges",
        "/v1/registrations",
        "/v1/assertions",
        "/v1/tokens/verify",
        "/v1/debug/exchange",
        "/.well-known/jwks.json",
        "/healthz",
        "/metrics",
        "/v1/admin/signing-keys/rotate",
    } <= paths
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "422" not in json.dumps(schema["paths"])
    assert "400" in schema["paths"]["/v1/assertions"]["post"]["responses"]


def test_one_log_line_per_verification_without_secrets(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appintegrity.service.verification")
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    answer = service.post("/v1/assertions", body).json()
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("verification")]
    assertion_lines = [line for line in lines if "kind=assertion" in line]
    assert len(assertion_lines) == 1
    line = assertion_lines[0]
    assert "platform=ios" in line and "outcome=allow" in line and "latency_ms=" in line
    challenge = json.loads(body["payload"])["challenge"]
    for secret in (challenge, body["token"], answer["appToken"], key_id):
        assert secret not in "\n".join(lines)
