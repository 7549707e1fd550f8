"""AppTokenVerifier: every refusal with its exact code, the leeway, and the cache."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from appintegrity.errors import Code
from appintegrity.tokens import (
    AppTokenVerifier,
    JwksFile,
    SigningKey,
    StaticJwks,
    TokenError,
    TokenIssuer,
    build_jwks,
)
from appintegrity.tokens.signing import SigningKey as _SigningKey

ISS = "https://integrity.example.com"
AUD = "api.example.com"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def make_verifier(key: SigningKey, clock: Callable[[], float] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return AppTokenVerifier(
        StaticJwks(build_jwks([key])),
        issuer=ISS,
        audience=AUD,
        clock=clock or Clock(),
        **kw,  # type: ignore[arg-type]
    )


def issue(key: SigningKey, ttl: int = 3600, now: datetime = NOW, **kw: object) -> str:
    issuer = TokenIssuer(key, issuer=kw.pop("iss", ISS), audience=kw.pop("aud", AUD))  # type: ignore[arg-type]
    return issuer.issue(
        subject="TEAM.com.example",
        platform="ios",
        decision="allow",
        ttl_seconds=ttl,
        now=now,
        **kw,  # type: ignore[arg-type]
    ).token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_raw(key: SigningKey, header: dict[str, object], payload: dict[str, object]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def good_payload() -> dict[str, object]:
    return {
        "iss": ISS,
        "aud": AUD,
        "sub": "app",
        "iat": int(T0),
        "exp": int(T0) + 60,
        "jti": "abc",
        "platform": "ios",
        "decision": "allow",
    }


def refused(verifier: AppTokenVerifier, token: str) -> TokenError:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    return info.value


def test_valid_token_is_accepted_with_its_claims(key: SigningKey) -> None:
    claims = make_verifier(key).verify(issue(key))
    assert claims.subject == "TEAM.com.example"
    assert claims.issuer == ISS
    assert claims.audience == (AUD,)
    assert claims.platform == "ios"
    assert claims.decision == "allow"
    assert claims.key_id == key.kid
    assert claims.expires_at == int(T0) + 3600
    assert not claims.limited_use and not claims.debug
    assert claims.device is None and claims.binding is None
    with pytest.raises(TypeError):
        claims.raw["sub"] = "other"  # type: ignore[index]


def test_repeated_token_comes_from_the_cache(key: SigningKey) -> None:
    verifier = make_verifier(key)
    token = issue(key)
    assert verifier.verify(token) is verifier.verify(token)


def test_tampered_payload_is_refused(key: SigningKey) -> None:
    header, payload, signature = issue(key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "com.attacker"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    error = refused(make_verifier(key), forged)
    assert error.code == Code.TOKEN_INVALID
    assert error.status == 401
    assert "signature" in error.message


def test_flipped_signature_bit_is_refused(key: SigningKey) -> None:
    token = issue(key)
    sig = bytearray(base64.urlsafe_b64decode(token.split(".")[2] + "=="))
    sig[10] ^= 1
    forged = token.rsplit(".", 1)[0] + "." + b64(bytes(sig))
    assert refused(make_verifier(key), forged).code == Code.TOKEN_INVALID


def test_token_signed_by_another_key_with_our_kid_is_refused(key: SigningKey) -> None:
    other = SigningKey(SigningKey.generate().private_key, kid=key.kid)
    assert refused(make_verifier(key), issue(other)).code == Code.TOKEN_INVALID


def test_alg_none_is_refused(key: SigningKey) -> None:
    header = b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
    payload = b64(json.dumps(good_payload()).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.{'A' * 86}"):
        assert refused(make_verifier(key), token).code == Code.TOKEN_INVALID


def test_hs256_with_the_public_key_as_secret_is_refused(key: SigningKey) -> None:
    # The classic algorithm-confusion attack: HMAC keyed with the published public key.
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = jwt.encode(
        good_payload(), public_pem.decode()[:32], algorithm="HS256", headers={"kid": key.kid}
    )
    error = refused(make_verifier(key), token)
    assert error.code == Code.TOKEN_INVALID


def test_rs256_is_refused(key: SigningKey) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(good_payload(), rsa_key, algorithm="RS256", headers={"kid": key.kid})
    assert refused(make_verifier(key), token).code == Code.TOKEN_INVALID


def test_header_says_es256_but_not_our_rules(key: SigningKey) -> None:
    verifier = make_verifier(key)
    payload = good_payload()
    cases = [
        {"alg": "ES256"},  # no kid
        {"alg": "ES256", "kid": ""},
        {"alg": "ES384", "kid": key.kid},
        {"alg": "ES256", "kid": key.kid, "crit": ["exp"]},
        {"alg": "ES256", "kid": key.kid, "typ": "JWE"},
    ]
    for header in cases:
        error = refused(verifier, sign_raw(key, header, payload))
        assert error.code == Code.TOKEN_INVALID, header
    ok = verifier.verify(sign_raw(key, {"alg": "ES256", "kid": key.kid}, payload))
    assert ok.jti == "abc"


def test_unknown_kid_is_refused(key: SigningKey) -> None:
    stranger = SigningKey.generate()
    error = refused(make_verifier(key), issue(stranger))
    assert error.code == Code.TOKEN_INVALID
    assert stranger.kid in error.message


def test_wrong_issuer_is_refused(key: SigningKey) -> None:
    error = refused(make_verifier(key), issue(key, iss="https://evil.example"))
    assert error.code == Code.TOKEN_INVALID
    assert "issuer" in error.message


def test_wrong_audience_is_refused_and_one_of_several_is_enough(key: SigningKey) -> None:
    assert refused(make_verifier(key), issue(key, aud="other")).code == Code.TOKEN_INVALID
    assert make_verifier(key).verify(issue(key, aud=["other", AUD])).audience == ("other", AUD)
    several = AppTokenVerifier(
        StaticJwks(build_jwks([key])), issuer=ISS, audience=["x", AUD], clock=Clock()
    )
    assert several.verify(issue(key)).subject == "TEAM.com.example"


def test_expired_within_leeway_passes_outside_is_refused(key: SigningKey) -> None:
    token = issue(key, ttl=60)
    assert make_verifier(key, Clock(T0 + 60 + 30)).verify(token).jti
    error = refused(make_verifier(key, Clock(T0 + 60 + 31)), token)
    assert error.code == Code.TOKEN_EXPIRED
    assert error.status == 401
    strict = make_verifier(key, Clock(T0 + 61), leeway_seconds=0)
    assert refused(strict, token).code == Code.TOKEN_EXPIRED


def test_cached_token_expires_all_the_same(key: SigningKey) -> None:
    clock = Clock()
    verifier = make_verifier(key, clock)
    token = issue(key, ttl=60)
    verifier.verify(token)
    clock.t = T0 + 200
    assert refused(verifier, token).code == Code.TOKEN_EXPIRED


def test_token_from_the_future_is_refused_beyond_leeway(key: SigningKey) -> None:
    future = datetime.fromtimestamp(T0 + 31, UTC)
    assert refused(make_verifier(key), issue(key, now=future)).code == Code.TOKEN_INVALID
    near = datetime.fromtimestamp(T0 + 30, UTC)
    assert make_verifier(key).verify(issue(key, now=near)).jti


def test_not_before_in_the_future_is_refused(key: SigningKey) -> None:
    payload = good_payload() | {"nbf": int(T0) + 100}
    token = sign_raw(key, {"alg": "ES256", "kid": key.kid}, payload)
    assert refused(make_verifier(key), token).code == Code.TOKEN_INVALID


@pytest.mark.parametrize(
    "change",
    [
        {"sub": None},
        {"jti": None},
        {"platform": None},
        {"decision": None},
        {"exp": None},
        {"iat": None},
        {"exp": "tomorrow"},
        {"exp": True},
        {"aud": None},
        {"aud": [1]},
        {"sub": 5},
        {"debug": "yes"},
        {"limited_use": 1},
        {"reasons": "x"},
        {"did": ""},
    ],
)
def test_malformed_claims_are_refused(key: SigningKey, change: dict[str, object]) -> None:
    payload = good_payload()
    for name, value in change.items():
        if value is None:
            del payload[name]
        else:
            payload[name] = value
    token = sign_raw(key, {"alg": "ES256", "kid": key.kid}, payload)
    assert refused(make_verifier(key), token).code == Code.TOKEN_INVALID


def test_payload_that_is_not_an_object_is_refused(key: SigningKey) -> None:
    header = b64(json.dumps({"alg": "ES256", "kid": key.kid}).encode())
    for body in (b"[1,2]", b"\xff\xfe", b"null"):
        signing_input = f"{header}.{b64(body)}"
        token = f"{signing_input}.{b64(key.sign(signing_input.encode()))}"
        assert refused(make_verifier(key), token).code == Code.TOKEN_INVALID


def _signed_body(key: SigningKey, body: bytes) -> str:
    header = b64(json.dumps({"alg": "ES256", "kid": key.kid}).encode())
    signing_input = f"{header}.{b64(body)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def test_payload_json_is_read_as_json_loads_reads_it(key: SigningKey) -> None:
    """The fast JSON path must agree with json.loads: surrounding whitespace is JSON,
    anything after the object is not."""
    body = json.dumps(good_payload(), indent=1).encode()
    for spaced in (b" \n" + body + b"\n ", body + b"\t"):
        assert make_verifier(key).verify(_signed_body(key, spaced)).subject == "app"
    for trailing in (body + b"{}", body + b" x", body + b"]"):
        error = refused(make_verifier(key), _signed_body(key, trailing))
        assert (error.code, error.message) == (Code.TOKEN_INVALID, "token payload is not JSON")


def test_cache_is_bounded(key: SigningKey) -> None:
    verifier = make_verifier(key, cache_size=2)
    tokens = [issue(key) for _ in range(3)]
    first = verifier.verify(tokens[0])
    verifier.verify(tokens[1])
    verifier.verify(tokens[2])
    assert len(verifier._cache) == 2
    assert verifier.verify(tokens[0]) is not first  # evicted, verified again


def test_cached_token_is_refused_once_its_key_is_withdrawn(tmp_path: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(build_jwks([old, new])))
    verifier = AppTokenVerifier(
        JwksFile(path, reload_interval=0), issuer=ISS, audience=AUD, clock=Clock()
    )
    token = issue(old)
    verifier.verify(token)
    path.write_text(json.dumps(build_jwks([new])) + " ")
    verifier.verify(issue(new))  # reload_interval=0: the file is re-read on this miss
    assert refused(verifier, token).code == Code.TOKEN_INVALID


def test_overlong_and_non_string_tokens_are_refused(key: SigningKey) -> None:
    verifier = make_verifier(key)
    assert refused(verifier, "a" * 9000).code == Code.TOKEN_INVALID
    assert refused(verifier, None).code == Code.TOKEN_INVALID  # type: ignore[arg-type]
    assert refused(verifier, "").code == Code.TOKEN_INVALID


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_arbitrary_text_is_refused_as_token_invalid(text: str) -> None:
    verifier = make_verifier(_KEY)
    with pytest.raises(TokenError) as info:
        verifier.verify(text)
    assert info.value.code == Code.TOKEN_INVALID


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=64, max_size=64))
def test_arbitrary_payload_and_signature_bytes_are_refused(payload: bytes, sig: bytes) -> None:
    header = b64(json.dumps({"alg": "ES256", "kid": _KEY.kid}).encode())
    token = f"{header}.{b64(payload) or 'e30'}.{b64(sig)}"
    with pytest.raises(TokenError) as info:
        make_verifier(_KEY).verify(token)
    assert info.value.code == Code.TOKEN_INVALID


_KEY = _SigningKey.generate()
