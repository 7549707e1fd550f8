"""Token binding (Approov's ``pay``): the app asks for a token bound to a request value, the
service signs the value's hash into the token, and an API refuses the token with any other value."""

from __future__ import annotations

import pytest

from appintegrity.tokens import AppTokenVerifier, StaticJwks, binding_for
from appintegrity.web import Protector, RoutePolicy

from .conftest import IOS_APP, Service, error_of

SESSION = "Bearer user-42-session"
BOUND = RoutePolicy(binding_header="Authorization")


def _protector(service: Service) -> Protector:
    jwks = service.client.get("/.well-known/jwks.json").json()
    issuer = "https://integrity.test"
    return Protector(AppTokenVerifier(StaticJwks(jwks), issuer=issuer, audience=issuer))


def _tokens(service: Service) -> dict[str, str]:
    phone, key_id = service.register()
    secret = service.post(
        "/v1/admin/debug-tokens", {"appId": IOS_APP, "name": "binding"}, headers=service.admin()
    ).json()["secret"]
    client = service.integrity
    return {
        "ios": client.assert_iphone(phone, key_id, bind_to=SESSION).token,
        "android": client.assert_android(service.kit.android(), bind_to=SESSION).token,
        "debug": client.exchange_debug_token(IOS_APP, secret, bind_to=SESSION).token,
    }


def test_bound_tokens_carry_the_hash_and_pass_only_with_the_bound_value(service: Service) -> None:
    protector = _protector(service)
    for platform, token in _tokens(service).items():
        claims = service.integrity.verify_token(token)
        assert claims["pay"] == binding_for(SESSION), platform
        assert protector.check(token, BOUND, route="/buy", binding_value=SESSION).allowed
        other = protector.check(token, BOUND, route="/buy", binding_value="Bearer user-7")
        assert not other.allowed and other.error is not None, platform
        assert (other.error.status, other.error.code) == (401, "token.binding_mismatch")
        missing = protector.check(token, BOUND, route="/buy", binding_value=None)
        assert not missing.allowed, platform


def test_an_unbound_token_does_not_pass_a_bound_route(service: Service) -> None:
    phone, key_id = service.register()
    token = service.integrity.assert_iphone(phone, key_id).token
    assert "pay" not in service.integrity.verify_token(token)
    verdict = _protector(service).check(token, BOUND, route="/buy", binding_value=SESSION)
    assert not verdict.allowed


@pytest.mark.parametrize(
    "binding",
    [SESSION, "", "x" * 44, binding_for(SESSION).rstrip("="), 42, None.__class__.__name__],
)
def test_the_service_takes_only_a_hash_as_the_binding(service: Service, binding: object) -> None:
    phone, key_id = service.register()
    body = {**service.assertion_body(phone, key_id), "binding": binding}
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "request.invalid")
