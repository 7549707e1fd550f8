"""Shared pieces for the adapter tests: keys, tokens, the outcome matrix, loopback servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry

from appintegrity.store import open_store
from appintegrity.testing.jwks import JwksServer
from appintegrity.tokens import (
    AppTokenVerifier,
    HttpJwks,
    JwksSource,
    SigningKey,
    StaticJwks,
    TokenIssuer,
    binding_for,
    build_jwks,
)
from appintegrity.web import (
    Mode,
    Protector,
    RoutePolicy,
    StoreTokenConsumer,
    TokenConsumer,
    WebMetrics,
)

ISS = "https://integrity.example.com"
AUD = "api.example.com"
HEADER = "X-App-Integrity"
SUBJECT = "TEAM123456.com.example.app"

# The routes every adapter test app serves, and what each asks of the token.
POLICIES: dict[str, RoutePolicy | None] = {
    "/plain": RoutePolicy(),
    "/nodebug": RoutePolicy(refuse_debug=True),
    "/limit-ok": RoutePolicy(accept_limit=True),
    "/once": RoutePolicy(require_limited_use=True),
    "/bound": RoutePolicy(binding_header="Authorization"),
    "/optional": RoutePolicy(require_token=False),
    "/open": None,
}


class World:
    """One signing key, its issuer, and protectors over a fresh metrics registry."""

    def __init__(self, tmp_path: Path, jwks: JwksSource | None = None) -> None:
        self.key = SigningKey.generate()
        self.issuer = TokenIssuer(self.key, issuer=ISS, audience=AUD)
        self.jwks = jwks or StaticJwks(build_jwks([self.key]))
        self.metrics = WebMetrics(CollectorRegistry())
        self.store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        self.consumer: TokenConsumer = StoreTokenConsumer(self.store)

    def protector(self, mode: Mode = Mode.ENFORCE) -> Protector:
        verifier = AppTokenVerifier(self.jwks, issuer=ISS, audience=AUD)
        return Protector(verifier, mode=mode, consumer=self.consumer, metrics=self.metrics)

    def token(
        self,
        *,
        key: SigningKey | None = None,
        iss: str = ISS,
        aud: str = AUD,
        age: int = 0,
        ttl: int = 600,
        decision: str = "allow",
        **kw: object,
    ) -> str:
        issuer = TokenIssuer(key or self.key, issuer=iss, audience=aud)
        now = datetime.fromtimestamp(time.time() - age, UTC)
        return issuer.issue(
            subject=SUBJECT,
            platform="ios",
            decision=decision,
            ttl_seconds=ttl,
            now=now,
            **kw,  # type: ignore[arg-type]
        ).token

    def close(self) -> None:
        asyncio.run(self.store.close())


@contextmanager
def unreachable_jwks_world(tmp_path: Path) -> Iterator[tuple[World, JwksServer]]:
    """A world whose verifiers fetch their keys from a JWKS server on loopback that fails
    every request (``server.fail``); both are closed on exit."""
    with JwksServer() as server:
        server.fail = True
        world = World(tmp_path, jwks=HttpJwks(server.url))
        try:
            yield world, server
        finally:
            world.close()


# An Authorization header as a client sends it, UTF-8 encoded; servers hand it over as bytes
# (ASGI) or as those bytes decoded as latin-1 (WSGI, PEP 3333).
UTF8_AUTHORIZATION = "Bearer josé".encode()
AS_WSGI_TEXT = UTF8_AUTHORIZATION.decode("latin-1")


def bound_to_utf8_header(world: World) -> str:
    """A token whose ``pay`` is the hash of ``UTF8_AUTHORIZATION``'s bytes, as sent."""
    return world.token(binding=binding_for(UTF8_AUTHORIZATION))


def forged(token: str) -> str:
    head, _, signature = token.rpartition(".")
    return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


@dataclass(frozen=True)
class Case:
    """One request and what enforcement answers; ``reason`` is the metrics label."""

    name: str
    path: str
    headers: Callable[[World], dict[str, str]]
    status: int
    code: str | None
    reason: str
    extra: dict[str, str] = field(default_factory=dict)


def _auth(world: World, value: str) -> dict[str, str]:
    return {HEADER: world.token(binding=binding_for("Bearer alice")), "Authorization": value}


CASES = [
    Case("allow", "/plain", lambda w: {HEADER: w.token()}, 200, None, "verified"),
    Case("missing", "/plain", lambda w: {}, 401, "token.missing", "missing"),
    Case(
        "bad_signature",
        "/plain",
        lambda w: {HEADER: forged(w.token())},
        401,
        "token.invalid",
        "invalid",
    ),
    Case("garbage", "/plain", lambda w: {HEADER: "not-a-token"}, 401, "token.invalid", "invalid"),
    Case(
        "expired_within_leeway",
        "/plain",
        lambda w: {HEADER: w.token(age=70, ttl=60)},
        200,
        None,
        "verified",
    ),
    Case(
        "expired",
        "/plain",
        lambda w: {HEADER: w.token(age=200, ttl=60)},
        401,
        "token.expired",
        "expired",
    ),
    Case(
        "wrong_issuer",
        "/plain",
        lambda w: {HEADER: w.token(iss="https://evil")},
        401,
        "token.invalid",
        "invalid",
    ),
    Case(
        "wrong_audience",
        "/plain",
        lambda w: {HEADER: w.token(aud="other")},
        401,
        "token.invalid",
        "invalid",
    ),
    Case(
        "unknown_kid",
        "/plain",
        lambda w: {HEADER: w.token(key=SigningKey.generate())},
        401,
        "token.invalid",
        "invalid",
    ),
    Case(
        "debug_accepted", "/plain", lambda w: {HEADER: w.token(debug=True)}, 200, None, "verified"
    ),
    Case(
        "debug_refused",
        "/nodebug",
        lambda w: {HEADER: w.token(debug=True)},
        403,
        "token.debug_refused",
        "debug",
    ),
    Case(
        "limit_refused",
        "/plain",
        lambda w: {HEADER: w.token(decision="limit")},
        403,
        "token.limited_decision",
        "limited",
    ),
    Case(
        "limit_accepted",
        "/limit-ok",
        lambda w: {HEADER: w.token(decision="limit")},
        200,
        None,
        "verified",
    ),
    Case(
        "blocked",
        "/limit-ok",
        lambda w: {HEADER: w.token(decision="block")},
        403,
        "decision.blocked",
        "blocked",
    ),
    Case(
        "not_limited_use",
        "/once",
        lambda w: {HEADER: w.token()},
        403,
        "token.not_limited_use",
        "not_limited_use",
    ),
    Case("binding_ok", "/bound", lambda w: _auth(w, "Bearer alice"), 200, None, "verified"),
    Case(
        "binding_mismatch",
        "/bound",
        lambda w: _auth(w, "Bearer mallory"),
        401,
        "token.binding_mismatch",
        "binding",
    ),
    Case(
        "binding_unbound_token",
        "/bound",
        lambda w: {HEADER: w.token(), "Authorization": "Bearer alice"},
        401,
        "token.binding_mismatch",
        "binding",
    ),
    Case("optional_missing", "/optional", lambda w: {}, 200, None, "missing"),
    Case(
        "optional_invalid",
        "/optional",
        lambda w: {HEADER: forged(w.token())},
        401,
        "token.invalid",
        "invalid",
    ),
]


class TokenVerifyServer:
    """The service's ``POST /v1/tokens/verify`` wire on loopback, over a real verifier.

    Used to test ``ServiceTokenConsumer``'s side of the wire (including failures the real
    service should never produce, such as a 500 or a non-JSON answer).
    """

    def __init__(self, verifier: AppTokenVerifier) -> None:
        self.consumed: set[str] = set()
        self.broken = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length))
                status, body = outer.answer(verifier, request)
                raw = b"<html>oops</html>" if outer.broken else json.dumps(body).encode()
                self.send_response(500 if outer.broken else status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(
        self, verifier: AppTokenVerifier, request: dict[str, object]
    ) -> tuple[int, dict[str, object]]:
        from appintegrity.tokens import TokenError

        try:
            claims = verifier.verify(str(request["token"]))
        except TokenError as error:
            return 401, {"error": {"code": error.code, "message": error.message}}
        if request.get("consume"):
            if claims.jti in self.consumed:
                return 409, {"error": {"code": "token.consumed", "message": "used"}}
            self.consumed.add(claims.jti)
        return 200, {"valid": True, "claims": dict(claims.raw)}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_UNVERIFIED_CLAIMS = {"missing", "invalid", "expired", "unverifiable"}


def check_case(world: World, case: Case, mode: Mode, status: int, body: dict[str, object]) -> None:
    """Assert what the adapter answered for ``case`` in ``mode``, and what it counted."""
    if mode is Mode.ENFORCE:
        assert status == case.status, (case.name, status, body)
    else:
        assert status == 200, (case.name, status, body)
    if status == 200:
        expected_subject = None if case.reason in _UNVERIFIED_CLAIMS else SUBJECT
        assert body == {"sub": expected_subject}, case.name
    else:
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == case.code
        assert isinstance(error["message"], str) and error["message"]
    result = "verified" if case.reason == "verified" else "unverified"
    action = "allowed" if status == 200 else "refused"
    counted = world.metrics.count(
        route=case.path, mode=mode.value, result=result, reason=case.reason, action=action
    )
    assert counted == 1, (case.name, counted)
