"""Review findings on app-token verification: hostile headers end as ``token.invalid``."""

from __future__ import annotations

import asyncio
import base64

import pytest

from appintegrity.errors import Code
from appintegrity.tokens import AppTokenVerifier, SigningKey, StaticJwks, TokenError, build_jwks


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verifier() -> AppTokenVerifier:
    return AppTokenVerifier(
        StaticJwks(build_jwks([SigningKey.generate()])),
        issuer="https://integrity.example.com",
        audience="api.example.com",
    )


# Deeper than the JSON decoder's recursion limit, well inside MAX_TOKEN_LENGTH: the header is
# parsed before any signature check, so anyone can send it.
DEEP_HEADER_TOKEN = f"{_b64(b'[' * 3000)}.{_b64(b'{}')}.{'A' * 86}"


def test_deeply_nested_header_is_token_invalid_not_a_recursion_error() -> None:
    with pytest.raises(TokenError) as info:
        _verifier().verify(DEEP_HEADER_TOKEN)
    assert (info.value.code, info.value.status) == (Code.TOKEN_INVALID, 401)


def test_deeply_nested_header_is_token_invalid_on_the_async_path() -> None:
    with pytest.raises(TokenError) as info:
        asyncio.run(_verifier().verify_async(DEEP_HEADER_TOKEN))
    assert info.value.code == Code.TOKEN_INVALID
