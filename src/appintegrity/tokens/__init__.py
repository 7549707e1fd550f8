"""App tokens: short-lived ES256 JWTs the service issues and any backend verifies locally.

The service signs with ``TokenIssuer`` and publishes ``build_jwks`` at
``/.well-known/jwks.json``; backends check tokens with ``AppTokenVerifier`` over a
``HttpJwks``, ``JwksFile`` or ``StaticJwks`` source.
"""

from __future__ import annotations

from collections.abc import Iterable

from appintegrity.tokens.binding import binding_for, binding_matches
from appintegrity.tokens.issuer import IssuedToken, TokenIssuer
from appintegrity.tokens.jwks import (
    HttpJwks,
    JwksFile,
    JwksFormatError,
    JwksSource,
    StaticJwks,
    parse_jwks,
)
from appintegrity.tokens.signing import ALGORITHM, SigningKey, jwk_thumbprint
from appintegrity.tokens.verifier import (
    TOKEN_UNVERIFIABLE,
    AppTokenClaims,
    AppTokenVerifier,
    JwksUnavailableError,
    TokenError,
    UnknownKeyError,
)


def build_jwks(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS document publishing the public halves of ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


__all__ = [
    "ALGORITHM",
    "TOKEN_UNVERIFIABLE",
    "AppTokenClaims",
    "AppTokenVerifier",
    "HttpJwks",
    "IssuedToken",
    "JwksFile",
    "JwksFormatError",
    "JwksSource",
    "JwksUnavailableError",
    "SigningKey",
    "StaticJwks",
    "TokenError",
    "TokenIssuer",
    "UnknownKeyError",
    "binding_for",
    "binding_matches",
    "build_jwks",
    "jwk_thumbprint",
    "parse_jwks",
]
