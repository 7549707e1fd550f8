"""Verifying app tokens: ES256 only, claims checked, verified tokens cached until expiry.

The verification itself is raw ``cryptography`` (a JOSE library adds allocation and
indirection that costs more than our fixed header needs): the token is parsed strictly,
the header must say ES256 with a ``kid``, the signature is checked before any claim is
trusted, and then ``iss``, ``aud``, ``exp``, ``iat`` and ``nbf`` are checked with leeway.
"""

from __future__ import annotations

import binascii
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from appintegrity.encoding import b64url_decode_strict, json_document
from appintegrity.errors import Code, ServiceError
from appintegrity.tokens.signing import ALGORITHM

if TYPE_CHECKING:
    from appintegrity.tokens.jwks import JwksSource

TOKEN_UNVERIFIABLE = Code.TOKEN_UNVERIFIABLE
"""Code for "the keys to check this token cannot be fetched right now" (HTTP 503)."""

MAX_TOKEN_LENGTH = 8192
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class TokenError(ServiceError):
    """An app token was missing, invalid, expired or already consumed (HTTP 401 by default)."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(code, message, status)


class UnknownKeyError(TokenError):
    """The token names a ``kid`` no published key has (401 ``token.invalid``); ``kid`` says
    which, so a holder of the keys can reload them and try once more."""

    def __init__(self, kid: str) -> None:
        super().__init__(Code.TOKEN_INVALID, f"token is signed by an unknown key (kid {kid!r})")
        self.kid = kid


class JwksUnavailableError(TokenError):
    """The JWKS could not be fetched and no cached key answers: fail closed with 503."""

    def __init__(self, message: str) -> None:
        super().__init__(TOKEN_UNVERIFIABLE, message, 503)


@dataclass(frozen=True)
class AppTokenClaims:
    """The verified claims of an app token."""

    issuer: str
    audience: tuple[str, ...]
    subject: str  # the app id
    issued_at: int
    expires_at: int
    jti: str
    platform: str
    decision: str  # "allow" | "limit"
    limited_use: bool
    debug: bool
    device: str | None  # "did": the device key id
    binding: str | None  # "pay": base64 SHA-256 of the bound request value
    key_id: str  # the signing key's kid
    raw: Mapping[str, object]


_new_claims = object.__new__


def _invalid(message: str) -> TokenError:
    return TokenError(Code.TOKEN_INVALID, message)


def _b64url(part: str) -> bytes:
    # ``_parse`` has checked that the token is ASCII; the decoding checks the alphabet.
    return b64url_decode_strict(part.encode("ascii"))


def _json_object(raw: bytes, what: str) -> dict[str, object]:
    try:
        value = json_document(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        # The header is parsed before the signature is checked: a deeply nested one from
        # anybody must end as token.invalid, not as a RecursionError (a 500).
        raise _invalid(f"token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise _invalid(f"token {what} must be a JSON object")
    return value


def _string(payload: Mapping[str, object], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"claim {name!r} must be a non-empty string")
    return value


def _optional_string(payload: Mapping[str, object], name: str) -> str | None:
    if name not in payload:
        return None
    return _string(payload, name)


def _audience_list(aud: object) -> tuple[str, ...]:
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return tuple(aud)
    raise _invalid("claim 'aud' must be a string or a non-empty array of strings")


def _numeric_date(payload: Mapping[str, object], name: str, required: bool) -> int | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"claim {name!r} must be a NumericDate")
    return int(value)


_MAX_HEADERS = 64  # distinct valid headers remembered: one per signing key in practice


def _kid_from_header(header_b64: str) -> str:
    """Check a JWS header and return its ``kid``."""
    try:
        header_raw = _b64url(header_b64)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("token header is not valid base64url") from exc
    header = _json_object(header_raw, "header")
    # RFC 8725 §3.1: accept only the one algorithm we issue; never "none", HS256 or RS256.
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise _invalid(f"token algorithm must be {ALGORITHM}, found {alg!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid("token header has no 'kid'")
    if "crit" in header:
        raise _invalid("token header has critical extensions we do not understand")
    typ = header.get("typ", "JWT")
    if typ != "JWT":
        raise _invalid(f"token type must be 'JWT', found {typ!r}")
    return kid


# (kid, signing input, DER signature, payload part): the token split, nothing trusted yet.
_Parsed = tuple[str, bytes, bytes, str]


class AppTokenVerifier:
    """Verifies app tokens against a JWKS source for one issuer and audience (or several).

    ``verify`` may block briefly on a JWKS refresh; ``verify_async`` awaits it. Verified
    tokens are cached (bounded LRU keyed by the token string) and re-checked for expiry and
    for their key still being published on every hit.
    """

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str | Sequence[str],
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self.jwks = jwks
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self.audiences:
            raise ValueError("audience must not be empty")
        self.leeway = leeway_seconds
        self.cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, tuple[AppTokenClaims, ec.EllipticCurvePublicKey]] = (
            OrderedDict()
        )
        self._cache_lock = threading.Lock()
        self._headers: dict[str, str] = {}

    def _parse(self, token: str) -> _Parsed:
        """Split and decode a compact JWS strictly; no claim is looked at yet."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise _invalid("token is not a compact JWS of acceptable length")
        parts = token.split(".")
        # An ES256 signature is 64 bytes: exactly 86 base64url characters. Each part's
        # alphabet is checked by its strict decoding (the payload's after the signature,
        # which covers it as written).
        if len(parts) != 3 or not parts[0] or not parts[1] or len(parts[2]) != 86:
            raise _invalid("token is not a compact ES256 JWS (three base64url parts)")
        header_b64, payload_b64, signature_b64 = parts
        # Our issuer's headers repeat (one per signing key): check each distinct one once.
        kid = self._headers.get(header_b64)
        if kid is None:
            kid = _kid_from_header(header_b64)
            if len(self._headers) < _MAX_HEADERS:
                self._headers[header_b64] = kid
        try:
            signature = _b64url(signature_b64)
        except (binascii.Error, ValueError) as exc:
            raise _invalid("token signature is not valid base64url") from exc
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        return kid, signing_input, der, payload_b64

    def verify(self, token: str) -> AppTokenClaims:
        """Verify ``token`` and return its claims; raises ``TokenError``."""
        now = self._clock()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        key = self.jwks.get_key(parsed[0])
        return self._check(token, parsed, key, now)

    async def verify_async(self, token: str) -> AppTokenClaims:
        """As ``verify``; a JWKS refresh (unknown ``kid``, or keys past their lifetime) is
        awaited, not blocking."""
        now = self._clock()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        # Peek first so a first-seen token costs no await; but keys past their lifetime are
        # refreshed as ``verify`` would, or a withdrawn key would keep verifying forever.
        key = self.jwks.peek(parsed[0])
        if key is None or self._stale():
            key = await self.jwks.get_key_async(parsed[0])
        return self._check(token, parsed, key, now)

    def _stale(self) -> bool:
        # ``stale`` joined the JwksSource protocol later: a source written before it (no
        # ``stale``) keeps working, refreshed on an unknown kid only, as it always was.
        stale = getattr(self.jwks, "stale", None)
        return stale is not None and bool(stale())

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _cached(self, token: str, now: float) -> AppTokenClaims | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        claims, key = entry
        if now <= claims.expires_at + self.leeway and self.jwks.peek(claims.key_id) is key:
            with self._cache_lock:
                if token in self._cache:
                    self._cache.move_to_end(token)
            return claims
        with self._cache_lock:
            self._cache.pop(token, None)
        return None

    def _remember(self, token: str, claims: AppTokenClaims, key: ec.EllipticCurvePublicKey) -> None:
        if self.cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[token] = (claims, key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _check(
        self,
        token: str,
        parsed: _Parsed,
        key: ec.EllipticCurvePublicKey | None,
        now: float,
    ) -> AppTokenClaims:
        kid, signing_input, signature, payload_b64 = parsed
        if key is None:
            raise UnknownKeyError(kid)
        try:
            key.verify(signature, signing_input, _ECDSA_SHA256)
        except InvalidSignature:
            raise _invalid("token signature does not verify") from None
        # Only now, with the signature good, are the claims worth reading.
        try:
            payload_raw = _b64url(payload_b64)
        except (binascii.Error, ValueError) as exc:
            raise _invalid("token payload is not valid base64url") from exc
        payload = _json_object(payload_raw, "payload")
        claims = self._claims(payload, kid, now)
        self._remember(token, claims, key)
        return claims

    def _claims(self, payload: dict[str, object], kid: str, now: float) -> AppTokenClaims:
        # Written for speed on the common shape (our issuer's claims); each odd shape falls
        # back to a helper that either normalises it or raises with a precise message.
        get = payload.get
        issuer = get("iss")
        if issuer != self.issuer:
            raise _invalid(f"token issuer must be {self.issuer!r}, found {issuer!r}")
        aud = get("aud")
        audience = (aud,) if type(aud) is str else _audience_list(aud)
        if self.audiences.isdisjoint(audience):
            raise _invalid(f"token audience {list(audience)} includes none of ours")
        expires_at = get("exp")
        if type(expires_at) is not int:
            expires_at = _numeric_date(payload, "exp", required=True)
        issued_at = get("iat")
        if type(issued_at) is not int:
            issued_at = _numeric_date(payload, "iat", required=True)
        assert expires_at is not None and issued_at is not None
        if now > expires_at + self.leeway:
            raise TokenError(
                Code.TOKEN_EXPIRED,
                f"token expired at {expires_at}, now is {int(now)} (leeway {self.leeway} s)",
            )
        if issued_at > now + self.leeway:
            raise _invalid(f"token issued in the future ({issued_at} > {int(now)})")
        if expires_at < issued_at:
            raise _invalid("token expires before it was issued")
        if "nbf" in payload:
            not_before = _numeric_date(payload, "nbf", required=True)
            if not_before is not None and not_before > now + self.leeway:
                raise _invalid(f"token not valid before {not_before}, now is {int(now)}")
        subject, jti, platform, decision = (
            get("sub"),
            get("jti"),
            get("platform"),
            get("decision"),
        )
        if (
            type(subject) is not str
            or type(jti) is not str
            or type(platform) is not str
            or type(decision) is not str
            or not (subject and jti and platform and decision)
        ):
            raise _invalid("claims 'sub', 'jti', 'platform', 'decision' must be non-empty strings")
        limited_use = get("limited_use", False)
        debug = get("debug", False)
        if type(limited_use) is not bool or type(debug) is not bool:
            raise _invalid("claims 'limited_use' and 'debug' must be booleans")
        device = _optional_string(payload, "did") if "did" in payload else None
        binding = _optional_string(payload, "pay") if "pay" in payload else None
        if "reasons" in payload:
            reasons = payload["reasons"]
            if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
                raise _invalid("claim 'reasons' must be an array of strings")
        # A frozen dataclass's __init__ sets each field through object.__setattr__ (about
        # 1.5 µs for these 14); filling the instance dict directly gives the same object in
        # half the time, and this runs on every first-seen token.
        claims = _new_claims(AppTokenClaims)
        claims.__dict__.update(
            issuer=self.issuer,
            audience=audience,
            subject=subject,
            issued_at=issued_at,
            expires_at=expires_at,
            jti=jti,
            platform=platform,
            decision=decision,
            limited_use=limited_use,
            debug=debug,
            device=device,
            binding=binding,
            key_id=kid,
            raw=MappingProxyType(payload),
        )
        return claims
