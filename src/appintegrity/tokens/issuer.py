"""Issuing app tokens: compact ES256 JWS with the claims a backend checks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appintegrity.encoding import b64url_encode
from appintegrity.tokens.signing import ALGORITHM, SigningKey

_JTI_BYTES = 16  # 128 random bits: unguessable and unique without coordination


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed app token and what it says."""

    token: str
    jti: str
    expires_at: datetime
    claims: Mapping[str, object]


def _compact_json(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class TokenIssuer:
    """Signs app tokens with one signing key for one issuer and audience."""

    def __init__(
        self, signing_key: SigningKey, *, issuer: str, audience: str | Sequence[str]
    ) -> None:
        if not issuer:
            raise ValueError("issuer must not be empty")
        self.signing_key = signing_key
        self.issuer = issuer
        if isinstance(audience, str):
            self.audience: str | list[str] = audience
        else:
            self.audience = list(audience)
            if not self.audience:
                raise ValueError("audience must not be empty")
        self._header = b64url_encode(
            _compact_json({"alg": ALGORITHM, "kid": signing_key.kid, "typ": "JWT"})
        )

    def issue(
        self,
        *,
        subject: str,
        platform: str,
        decision: str,
        ttl_seconds: int,
        now: datetime,
        limited_use: bool = False,
        debug: bool = False,
        device: str | None = None,
        binding: str | None = None,
        reasons: Sequence[str] = (),
    ) -> IssuedToken:
        """Sign a token for ``subject`` (the app id) valid for ``ttl_seconds`` from ``now``.

        Optional claims appear only when set, so an ordinary token stays small.
        """
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, found {ttl_seconds}")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        issued_at = int(now.timestamp())
        expires_at = issued_at + ttl_seconds
        jti = b64url_encode(secrets.token_bytes(_JTI_BYTES))
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued_at,
            "exp": expires_at,
            "jti": jti,
            "platform": platform,
            "decision": decision,
        }
        if limited_use:
            claims["limited_use"] = True
        if debug:
            claims["debug"] = True
        if device is not None:
            claims["did"] = device
        if binding is not None:
            claims["pay"] = binding
        if reasons:
            claims["reasons"] = list(reasons)
        signing_input = f"{self._header}.{b64url_encode(_compact_json(claims))}"
        signature = self.signing_key.sign(signing_input.encode("ascii"))
        token = f"{signing_input}.{b64url_encode(signature)}"
        return IssuedToken(
            token=token,
            jti=jti,
            expires_at=datetime.fromtimestamp(issued_at, UTC) + timedelta(seconds=ttl_seconds),
            claims=claims,
        )
