"""JWKS sources: parsing, a file that changes, and the service's endpoint over real HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appintegrity.errors import Code, ConfigError
from appintegrity.testing.jwks import JwksServer
from appintegrity.tokens import (
    TOKEN_UNVERIFIABLE,
    AppTokenVerifier,
    HttpJwks,
    JwksFile,
    JwksFormatError,
    JwksUnavailableError,
    SigningKey,
    StaticJwks,
    TokenError,
    TokenIssuer,
    build_jwks,
    parse_jwks,
)

ISS = "https://integrity.example.com"
AUD = "api"
NOW = datetime.now(UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def token_for(key: SigningKey) -> str:
    issuer = TokenIssuer(key, issuer=ISS, audience=AUD)
    return issuer.issue(
        subject="app", platform="ios", decision="allow", ttl_seconds=600, now=NOW
    ).token


def test_parse_skips_foreign_keys_and_rejects_broken_p256_keys() -> None:
    key = SigningKey.generate()
    jwk = key.public_jwk()
    foreign = [
        {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
        jwk | {"kid": "enc", "use": "enc"},
        jwk | {"kid": "es384", "alg": "ES384"},
    ]
    assert list(parse_jwks({"keys": [*foreign, jwk]})) == [key.kid]
    broken = [
        {"keys": "nope"},
        [],
        {"keys": [jwk, jwk]},
        {"keys": [jwk | {"kid": None}]},
        {"keys": [jwk | {"x": "AAAA"}]},
        {"keys": [jwk | {"x": 5}]},
        {"keys": [jwk | {"y": jwk["x"]}]},  # not on the curve
        {"keys": ["x"]},
    ]
    for document in broken:
        with pytest.raises(JwksFormatError):
            parse_jwks(document)
    with pytest.raises(ConfigError):
        StaticJwks({"keys": [jwk | {"y": jwk["x"]}]})


def test_jwks_file_reloads_on_change_and_keeps_keys_when_broken(tmp_path: Path) -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(build_jwks([first])))
    clock = Clock()
    source = JwksFile(path, reload_interval=60, clock=clock)
    held = source.peek(first.kid)
    assert held is not None
    assert source.get_key(second.kid) is None
    path.write_text(json.dumps(build_jwks([first, second])))
    # An unknown kid triggers a re-read at once, and an unchanged key keeps its object.
    assert source.get_key(second.kid) is not None
    assert source.peek(first.kid) is held
    path.write_text("{ half written")
    clock.t += 61
    assert source.get_key(first.kid) is held
    with pytest.raises(ConfigError):
        JwksFile(tmp_path / "missing.json")


def test_http_jwks_fetches_once_then_serves_from_memory(jwks_server: JwksServer) -> None:
    key = SigningKey.generate()
    jwks_server.document = build_jwks([key])
    verifier = AppTokenVerifier(HttpJwks(jwks_server.url), issuer=ISS, audience=AUD)
    for _ in range(3):
        verifier.verify(token_for(key))
    assert jwks_server.requests == 1


def test_rotation_is_picked_up_on_unknown_kid(jwks_server: JwksServer) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    jwks_server.document = build_jwks([old])
    clock = Clock()
    source = HttpJwks(jwks_server.url, min_refresh_interval=30, clock=clock)
    verifier = AppTokenVerifier(source, issuer=ISS, audience=AUD)
    verifier.verify(token_for(old))
    jwks_server.document = build_jwks([new, old])
    clock.t += 31
    assert verifier.verify(token_for(new)).key_id == new.kid
    assert jwks_server.requests == 2


def test_bogus_kids_cannot_hammer_the_service(jwks_server: JwksServer) -> None:
    key = SigningKey.generate()
    jwks_server.document = build_jwks([key])
    clock = Clock()
    verifier = AppTokenVerifier(
        HttpJwks(jwks_server.url, min_refresh_interval=30, clock=clock), issuer=ISS, audience=AUD
    )
    verifier.verify(token_for(key))
    for _ in range(50):
        with pytest.raises(TokenError) as info:
            verifier.verify(token_for(SigningKey.generate()))
        assert info.value.code == Code.TOKEN_INVALID
    assert jwks_server.requests == 1  # within min_refresh_interval of the first fetch
    clock.t += 31
    for _ in range(50):
        with pytest.raises(TokenError):
            verifier.verify(token_for(SigningKey.generate()))
    assert jwks_server.requests == 2  # one refresh for the first bogus kid of the new interval


def test_failed_refresh_keeps_serving_cached_keys(jwks_server: JwksServer) -> None:
    key = SigningKey.generate()
    jwks_server.document = build_jwks([key])
    clock = Clock()
    source = HttpJwks(jwks_server.url, cache_ttl=100, min_refresh_interval=1, clock=clock)
    verifier = AppTokenVerifier(source, issuer=ISS, audience=AUD, cache_size=0)
    verifier.verify(token_for(key))
    jwks_server.fail = True
    clock.t += 101  # stale: a refresh is attempted, fails, and the held key still answers
    assert verifier.verify(token_for(key)).key_id == key.kid
    assert jwks_server.requests == 2
    # A kid we cannot look up while the service is failing is "unverifiable", not "invalid".
    clock.t += 2
    with pytest.raises(JwksUnavailableError) as info:
        verifier.verify(token_for(SigningKey.generate()))
    assert info.value.code == TOKEN_UNVERIFIABLE
    assert info.value.status == 503


def test_unreachable_jwks_is_unverifiable_not_invalid(jwks_server: JwksServer) -> None:
    jwks_server.fail = True
    verifier = AppTokenVerifier(HttpJwks(jwks_server.url), issuer=ISS, audience=AUD)
    with pytest.raises(JwksUnavailableError) as info:
        verifier.verify(token_for(SigningKey.generate()))
    assert (info.value.code, info.value.status) == (TOKEN_UNVERIFIABLE, 503)
    closed = HttpJwks("http://127.0.0.1:9/jwks.json", timeout=0.5)
    with pytest.raises(JwksUnavailableError):
        AppTokenVerifier(closed, issuer=ISS, audience=AUD).verify(token_for(SigningKey.generate()))


def test_non_jwks_answer_is_a_failed_fetch(jwks_server: JwksServer) -> None:
    jwks_server.document = {"not": "a jwks"}
    verifier = AppTokenVerifier(HttpJwks(jwks_server.url), issuer=ISS, audience=AUD)
    with pytest.raises(JwksUnavailableError):
        verifier.verify(token_for(SigningKey.generate()))


def test_async_refresh_is_shared_by_concurrent_requests(jwks_server: JwksServer) -> None:
    key = SigningKey.generate()
    jwks_server.document = build_jwks([key])
    verifier = AppTokenVerifier(HttpJwks(jwks_server.url), issuer=ISS, audience=AUD)
    tokens = [token_for(key) for _ in range(20)]

    async def run() -> list[str]:
        results = await asyncio.gather(*(verifier.verify_async(t) for t in tokens))
        return [claims.key_id for claims in results]

    assert asyncio.run(run()) == [key.kid] * 20
    assert jwks_server.requests == 1


def test_async_unreachable_is_unverifiable(jwks_server: JwksServer) -> None:
    jwks_server.fail = True
    verifier = AppTokenVerifier(HttpJwks(jwks_server.url), issuer=ISS, audience=AUD)
    with pytest.raises(JwksUnavailableError):
        asyncio.run(verifier.verify_async(token_for(SigningKey.generate())))


def test_async_verify_refreshes_a_stale_http_jwks_and_a_withdrawn_key_stops_verifying(
    jwks_server: JwksServer,
) -> None:
    compromised, fresh = SigningKey.generate(), SigningKey.generate()
    jwks_server.document = build_jwks([compromised, fresh])
    clock = Clock()
    source = HttpJwks(jwks_server.url, cache_ttl=100, min_refresh_interval=1, clock=clock)
    verifier = AppTokenVerifier(source, issuer=ISS, audience=AUD)
    seen_before = token_for(compromised)
    assert asyncio.run(verifier.verify_async(seen_before)).key_id == compromised.kid
    jwks_server.document = build_jwks([fresh])  # the service withdraws the compromised key
    clock.t += 101  # past cache_ttl: the next first-seen token refreshes the keys
    with pytest.raises(TokenError) as info:
        asyncio.run(verifier.verify_async(token_for(compromised)))
    assert info.value.code == Code.TOKEN_INVALID
    assert jwks_server.requests == 2
    # The cached token of the withdrawn key fails too; the other key still verifies.
    with pytest.raises(TokenError) as info:
        asyncio.run(verifier.verify_async(seen_before))
    assert info.value.code == Code.TOKEN_INVALID
    assert asyncio.run(verifier.verify_async(token_for(fresh))).key_id == fresh.kid
    assert jwks_server.requests == 2


def test_async_verify_does_not_refetch_a_fresh_or_just_failed_jwks(
    jwks_server: JwksServer,
) -> None:
    key = SigningKey.generate()
    jwks_server.document = build_jwks([key])
    clock = Clock()
    source = HttpJwks(jwks_server.url, cache_ttl=100, min_refresh_interval=30, clock=clock)
    verifier = AppTokenVerifier(source, issuer=ISS, audience=AUD, cache_size=0)

    async def verify_many() -> None:
        for _ in range(5):
            assert (await verifier.verify_async(token_for(key))).key_id == key.kid

    asyncio.run(verify_many())
    assert jwks_server.requests == 1  # within cache_ttl: peeked, never refetched
    jwks_server.fail = True
    clock.t += 101
    asyncio.run(verify_many())  # one failed refresh; the held key keeps answering
    assert jwks_server.requests == 2
    clock.t += 29
    asyncio.run(verify_many())
    assert jwks_server.requests == 2  # within min_refresh_interval of the failed attempt
    clock.t += 1
    asyncio.run(verify_many())
    assert jwks_server.requests == 3


def test_async_verify_rereads_a_changed_jwks_file_after_the_reload_interval(
    tmp_path: Path,
) -> None:
    withdrawn, kept = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(build_jwks([withdrawn, kept])))
    clock = Clock()
    source = JwksFile(path, reload_interval=60, clock=clock)
    verifier = AppTokenVerifier(source, issuer=ISS, audience=AUD)
    seen_before = token_for(withdrawn)
    assert asyncio.run(verifier.verify_async(seen_before)).key_id == withdrawn.kid
    path.write_text(json.dumps(build_jwks([kept])))
    clock.t += 59
    assert asyncio.run(verifier.verify_async(token_for(withdrawn))).key_id == withdrawn.kid
    clock.t += 1
    with pytest.raises(TokenError) as info:
        asyncio.run(verifier.verify_async(token_for(withdrawn)))
    assert info.value.code == Code.TOKEN_INVALID
    with pytest.raises(TokenError):
        asyncio.run(verifier.verify_async(seen_before))
    assert asyncio.run(verifier.verify_async(token_for(kept))).key_id == kept.kid


def test_staleness_is_a_cheap_question_each_source_answers(tmp_path: Path) -> None:
    key = SigningKey.generate()
    assert StaticJwks(build_jwks([key])).stale() is False
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(build_jwks([key])))
    clock = Clock()
    source = JwksFile(path, reload_interval=60, clock=clock)
    assert source.stale() is False
    clock.t += 60
    assert source.stale() is True
    assert source.get_key(key.kid) is not None
    assert source.stale() is False
    never_fetched = HttpJwks("http://127.0.0.1:9/jwks.json", clock=clock)
    assert never_fetched.stale() is False  # nothing held: every kid misses and fetches


def test_a_source_written_before_stale_existed_still_verifies_async() -> None:
    """A user's own JWKS source with only peek, get_key and get_key_async (the protocol
    before ``stale``) keeps working on async paths."""
    key = SigningKey.generate()
    keys = StaticJwks(build_jwks([key]))

    class OwnSource:
        def peek(self, kid: str) -> object:
            return keys.peek(kid)

        def get_key(self, kid: str) -> object:
            return keys.get_key(kid)

        async def get_key_async(self, kid: str) -> object:
            return keys.get_key(kid)

    verifier = AppTokenVerifier(OwnSource(), issuer=ISS, audience=AUD)  # type: ignore[arg-type]
    claims = asyncio.run(verifier.verify_async(token_for(key)))
    assert claims.subject == "app"
