"""The framework-neutral pieces: route matching, consumers over the wire, configuration."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from web_support import AUD, ISS, SUBJECT, TokenVerifyServer, World

from appintegrity.errors import ConfigError
from appintegrity.tokens import AppTokenVerifier, TokenError
from appintegrity.web import (
    Mode,
    Outcome,
    RoutePolicy,
    RouteTable,
    ServiceTokenConsumer,
    StoreTokenConsumer,
)
from appintegrity.web.config import policy_from_mapping, protector_from_mapping

STRICT = RoutePolicy(refuse_debug=True)
LOOSE = RoutePolicy(accept_limit=True)
POST_ONLY = RoutePolicy(require_limited_use=True)


def test_route_table_prefers_the_most_specific_pattern() -> None:
    table = RouteTable(
        {
            "/premium/*": LOOSE,
            "/premium/preview": None,
            "/premium/gold/*": STRICT,
            "POST /purchases": POST_ONLY,
            "/purchases": STRICT,
        }
    )
    assert table.match("GET", "/premium") == ("/premium/*", LOOSE)
    assert table.match("GET", "/premium/video/1") == ("/premium/*", LOOSE)
    assert table.match("GET", "/premium/gold/x") == ("/premium/gold/*", STRICT)
    assert table.match("GET", "/premium/preview") is None
    assert table.match("GET", "/premiumx") is None
    assert table.match("POST", "/purchases") == ("POST /purchases", POST_ONLY)
    assert table.match("GET", "/purchases") == ("/purchases", STRICT)
    assert table.match("GET", "/other") is None
    everything = RouteTable({"/*": STRICT, "/healthz": None})
    assert everything.match("GET", "/anything/at/all") == ("/*", STRICT)
    assert everything.match("GET", "/healthz") is None
    with pytest.raises(ValueError):
        RouteTable({"purchases": STRICT})


def test_a_get_pattern_covers_head_requests_unless_a_head_pattern_names_the_path() -> None:
    # Frameworks answer HEAD with the GET handler: the handler runs, its headers go out.
    table = RouteTable(
        {
            "GET /premium": STRICT,
            "GET /videos/*": LOOSE,
            "GET /status": STRICT,
            "HEAD /status": None,
            "GET /feed": STRICT,
            "HEAD /feed": LOOSE,
        }
    )
    assert table.match("HEAD", "/premium") == ("GET /premium", STRICT)
    assert table.match("HEAD", "/videos/1") == ("GET /videos/*", LOOSE)
    assert table.match("HEAD", "/status") is None
    assert table.match("HEAD", "/feed") == ("HEAD /feed", LOOSE)
    assert table.match("POST", "/premium") is None
    assert table.match("OPTIONS", "/premium") is None


def test_an_exact_pattern_covers_its_path_with_or_without_one_trailing_slash() -> None:
    # Flask with strict_slashes=False, Django with APPEND_SLASH, and most WSGI apps route
    # "/purchases/" to the "/purchases" handler (and back).
    table = RouteTable({"/purchases": STRICT, "POST /orders/": POST_ONLY, "/": LOOSE})
    assert table.match("GET", "/purchases/") == ("/purchases", STRICT)
    assert table.match("POST", "/orders") == ("POST /orders/", POST_ONLY)
    assert table.match("POST", "/orders/") == ("POST /orders/", POST_ONLY)
    assert table.match("GET", "/") == ("/", LOOSE)
    assert table.match("GET", "/purchases//") is None
    with pytest.raises(ValueError, match="same path"):
        RouteTable({"/purchases": STRICT, "/purchases/": None})
    assert RouteTable({"/a": STRICT, "/a/": STRICT}).match("GET", "/a/") is not None


def test_an_open_exact_pattern_opens_only_its_path_as_written() -> None:
    """The other spelling of an opened path stays under the prefix that protects it: a
    catch-all route would otherwise serve "/premium/preview/" with no token."""
    table = RouteTable({"/premium/*": STRICT, "/premium/preview": None})
    assert table.match("GET", "/premium/preview") is None
    assert table.match("GET", "/premium/preview/") == ("/premium/*", STRICT)
    django_style = RouteTable({"/premium/*": STRICT, "/premium/preview/": None})
    assert django_style.match("GET", "/premium/preview/") is None
    assert django_style.match("GET", "/premium/preview") == ("/premium/*", STRICT)


def test_policy_from_mapping() -> None:
    assert policy_from_mapping({"ACCEPT_LIMIT": True, "mode": "monitor"}) == RoutePolicy(
        accept_limit=True, mode=Mode.MONITOR
    )
    assert policy_from_mapping(None) is None
    with pytest.raises(ConfigError):
        policy_from_mapping({"accept_everything": True})


def test_protector_from_mapping_needs_issuer_audience_and_keys() -> None:
    with pytest.raises(ConfigError):
        protector_from_mapping({"AUDIENCE": AUD, "JWKS": {"keys": []}})
    with pytest.raises(ConfigError):
        protector_from_mapping({"ISSUER": ISS, "AUDIENCE": AUD})
    with pytest.raises(ConfigError):
        protector_from_mapping({"ISSUER": ISS, "AUDIENCE": AUD, "JWKS": {"keys": []}, "MODE": "x"})


def test_limited_use_policy_without_a_consumer_is_refused_at_start_up(world: World) -> None:
    protector = world.protector()
    protector.consumer = None
    with pytest.raises(ValueError):
        protector.validate(POST_ONLY)


@pytest.fixture
def service(world: World) -> Iterator[TokenVerifyServer]:
    server = TokenVerifyServer(AppTokenVerifier(world.jwks, issuer=ISS, audience=AUD))
    yield server
    server.close()


def test_service_consumer_consumes_once_over_http(world: World, service: TokenVerifyServer) -> None:
    consumer = ServiceTokenConsumer(service.base_url)
    world.consumer = consumer
    protector = world.protector()
    token = world.token(limited_use=True)
    first = protector.check(token, POST_ONLY, route="/once")
    second = protector.check(token, POST_ONLY, route="/once")
    assert first.allowed and first.claims is not None and first.claims.subject == SUBJECT
    assert not second.allowed
    assert second.outcome is Outcome.CONSUMED
    assert second.error is not None and second.error.code == "token.consumed"
    other = world.token(limited_use=True)

    async def twice() -> tuple[bool, bool]:
        a = await protector.check_async(other, POST_ONLY, route="/once")
        b = await protector.check_async(other, POST_ONLY, route="/once")
        return a.allowed, b.allowed

    assert asyncio.run(twice()) == (True, False)
    consumer.close()


def test_service_consumer_fails_closed_when_the_service_misbehaves(
    world: World, service: TokenVerifyServer
) -> None:
    consumer = ServiceTokenConsumer(service.base_url)
    token = world.token(limited_use=True)
    claims = world.protector().verifier.verify(token)
    service.broken = True
    with pytest.raises(TokenError) as info:
        consumer.consume(token, claims)
    assert (info.value.code, info.value.status) == ("token.unverifiable", 503)
    down = ServiceTokenConsumer("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(TokenError) as info:
        down.consume(token, claims)
    assert (info.value.code, info.value.status) == ("token.unverifiable", 503)
    with pytest.raises(TokenError) as info:
        asyncio.run(down.consume_async(token, claims))
    assert info.value.status == 503


@pytest.mark.parametrize("policy", [RoutePolicy(), LOOSE], ids=["default", "accept-limit"])
def test_a_blocked_decision_from_a_monitoring_service_is_refused_in_enforce_mode(
    world: World, policy: RoutePolicy
) -> None:
    # A service in monitor mode still hands a blocked device a token, marked "block".
    token = world.token(decision="block")
    enforced = world.protector(Mode.ENFORCE).check(token, policy, route="/buy")
    assert not enforced.allowed
    assert enforced.error is not None
    assert (enforced.error.status, enforced.error.code) == (403, "decision.blocked")
    watched = world.protector(Mode.MONITOR).check(token, policy, route="/buy")
    assert watched.allowed and watched.outcome is Outcome.BLOCKED
    assert world.metrics.count(route="/buy", reason="blocked", action="allowed") == 1


def test_a_deeply_nested_token_header_is_refused_as_invalid_not_raised(world: World) -> None:
    # The header is read before any signature check: anybody can send this one.
    header = base64.urlsafe_b64encode(b"[" * 3000).rstrip(b"=").decode()
    token = f"{header}.e30.{'A' * 86}"
    verdict = world.protector(Mode.ENFORCE).check(token, RoutePolicy(), route="/buy")
    assert not verdict.allowed and verdict.outcome is Outcome.INVALID
    assert verdict.error is not None
    assert (verdict.error.status, verdict.error.code) == (401, "token.invalid")
    watched = asyncio.run(
        world.protector(Mode.MONITOR).check_async(token, RoutePolicy(), route="/buy")
    )
    assert watched.allowed and watched.claims is None and watched.outcome is Outcome.INVALID


def test_store_consumer_remembers_a_used_token_through_the_expiry_leeway(world: World) -> None:
    # Expired 10 s ago: the verifier still accepts it (leeway 30 s), so its jti must still be
    # remembered after the store purges what expired.
    protector = world.protector()
    token = world.token(limited_use=True, age=610, ttl=600)
    assert protector.check(token, POST_ONLY, route="/once").allowed
    asyncio.run(world.store.purge_expired(datetime.now(UTC)))
    again = protector.check(token, POST_ONLY, route="/once")
    assert not again.allowed and again.outcome is Outcome.CONSUMED
    assert again.error is not None
    assert (again.error.status, again.error.code) == (409, "token.consumed")


def test_a_store_consumer_forgetting_before_the_leeway_ends_is_refused_at_start_up(
    world: World,
) -> None:
    world.consumer = StoreTokenConsumer(world.store, leeway_seconds=10)
    with pytest.raises(ValueError, match="leeway"):
        world.protector().validate(POST_ONLY)
    world.consumer = StoreTokenConsumer(world.store, leeway_seconds=30)
    world.protector().validate(POST_ONLY)
