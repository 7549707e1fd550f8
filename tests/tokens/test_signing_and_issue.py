"""Signing keys, JWKS documents and issued tokens, cross-checked with independent libraries."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey

from appintegrity.errors import Code
from appintegrity.tokens import (
    AppTokenVerifier,
    SigningKey,
    StaticJwks,
    TokenIssuer,
    binding_for,
    build_jwks,
    parse_jwks,
)
from appintegrity.tokens.binding import binding_matches

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    key = SigningKey.generate()
    independent = ECKey.import_key(key.public_jwk()).thumbprint()
    assert key.kid == independent


def test_public_jwk_has_the_members_verifiers_expect() -> None:
    key = SigningKey.generate()
    jwk = key.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "d" not in jwk
    assert parse_jwks(build_jwks([key]))[key.kid].public_numbers() == (
        key.private_key.public_key().public_numbers()
    )


def test_private_pem_round_trip_keeps_the_kid() -> None:
    key = SigningKey.generate()
    pem = key.private_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SigningKey.from_pem(pem)
    assert again.kid == key.kid
    assert SigningKey.from_pem(pem, kid="k1").kid == "k1"


def test_from_pem_refuses_other_keys_and_garbage() -> None:
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    p384_pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for pem in (rsa_pem, p384_pem, b"not a pem"):
        with pytest.raises(Exception) as info:
            SigningKey.from_pem(pem)
        assert getattr(info.value, "code", None) == Code.CONFIG_INVALID


def test_issued_token_verifies_with_pyjwt_and_carries_the_claims() -> None:
    key = SigningKey.generate()
    issuer = TokenIssuer(key, issuer="https://integrity.example.com", audience="api")
    issued = issuer.issue(
        subject="TEAM.com.example", platform="ios", decision="allow", ttl_seconds=3600, now=NOW
    )
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    claims = jwt.decode(
        issued.token,
        key.private_key.public_key(),
        algorithms=["ES256"],
        audience="api",
        issuer="https://integrity.example.com",
        options={"verify_exp": False},
    )
    assert claims == dict(issued.claims)
    assert claims["sub"] == "TEAM.com.example"
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["exp"] == int(NOW.timestamp()) + 3600
    assert issued.expires_at == NOW + timedelta(hours=1)
    assert claims["jti"] == issued.jti
    assert len(base64.urlsafe_b64decode(issued.jti + "==")) == 16
    # Optional claims are absent unless set.
    assert not {"limited_use", "debug", "did", "pay", "reasons"} & set(claims)


def test_optional_claims_appear_when_set() -> None:
    key = SigningKey.generate()
    issued = TokenIssuer(key, issuer="https://i", audience=["a", "b"]).issue(
        subject="app",
        platform="android",
        decision="limit",
        ttl_seconds=60,
        now=NOW,
        limited_use=True,
        debug=True,
        device="a2V5",
        binding=binding_for("Bearer abc"),
        reasons=["google.device_activity_high"],
    )
    claims = issued.claims
    assert claims["aud"] == ["a", "b"]
    assert claims["limited_use"] is True
    assert claims["debug"] is True
    assert claims["did"] == "a2V5"
    assert claims["pay"] == binding_for("Bearer abc")
    assert claims["reasons"] == ["google.device_activity_high"]
    verifier = AppTokenVerifier(
        StaticJwks(build_jwks([key])),
        issuer="https://i",
        audience="b",
        clock=lambda: NOW.timestamp(),
    )
    verified = verifier.verify(issued.token)
    assert verified.limited_use and verified.debug
    assert verified.device == "a2V5"
    assert verified.binding == binding_for("Bearer abc")
    assert verified.decision == "limit"
    assert verified.audience == ("a", "b")


def test_jti_is_unique_per_token() -> None:
    issuer = TokenIssuer(SigningKey.generate(), issuer="https://i", audience="a")
    jtis = {
        issuer.issue(subject="s", platform="ios", decision="allow", ttl_seconds=5, now=NOW).jti
        for _ in range(200)
    }
    assert len(jtis) == 200


def test_issue_refuses_nonsense_ttl_and_naive_time() -> None:
    issuer = TokenIssuer(SigningKey.generate(), issuer="https://i", audience="a")
    with pytest.raises(ValueError):
        issuer.issue(subject="s", platform="ios", decision="allow", ttl_seconds=0, now=NOW)
    with pytest.raises(ValueError):
        issuer.issue(
            subject="s",
            platform="ios",
            decision="allow",
            ttl_seconds=5,
            now=datetime(2025, 1, 1),
        )


def test_binding_is_approovs_pay_format() -> None:
    assert binding_for("") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    value = "Bearer eyJabc"
    expected = base64.b64encode(hashlib.sha256(value.encode()).digest()).decode()
    assert binding_for(value) == expected == binding_for(value.encode())
    assert binding_matches(expected, value)
    assert not binding_matches(expected, value + " ")
