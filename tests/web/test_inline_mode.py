"""Inline mode over Starlette's TestClient: App Attest assertions and Play Integrity tokens
verified in the middleware with the core verifiers and a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from inline_support import CASES, MAX_BODY, ROUTES, Case, run_case
from inline_support import Rig as SharedRig
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from appintegrity.encoding import b64_encode
from appintegrity.errors import ConfigError
from appintegrity.store import DeviceKey
from appintegrity.web import Mode, RoutePolicy
from appintegrity.web.inline import (
    ASSERTION_HEADER,
    KEY_ID_HEADER,
    InlineMiddleware,
)

IOS_APP = "TEAM123456.com.example.app"
ANDROID_APP = "com.example.app"
BODY = b'{"item":"gold","quantity":1}'


class Rig(SharedRig):
    """The shared rig, served by a Starlette app behind the ASGI inline middleware."""

    def client(self, mode: Mode = Mode.ENFORCE) -> TestClient:
        async def handler(request: Request) -> JSONResponse:
            proof = getattr(request.state, "app_integrity", None)
            body = await request.body()
            return JSONResponse(
                {
                    "platform": proof.platform if proof else None,
                    "decision": proof.decision if proof else None,
                    "echo": body.decode(),
                }
            )

        routes = {"/buy": RoutePolicy(), "/browse": RoutePolicy(accept_limit=True)}
        app = Starlette(
            routes=[Route(p, handler, methods=["POST"]) for p in routes],
            middleware=[
                Middleware(
                    InlineMiddleware,
                    verifier=self.verifier,
                    routes=routes,
                    mode=mode,
                    metrics=self.metrics,
                )
            ],
        )
        return TestClient(app)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def error_code(response: object) -> str:
    return response.json()["error"]["code"]  # type: ignore[attr-defined, no-any-return]


def test_app_attest_assertion_passes_and_the_app_still_reads_the_body(rig: Rig) -> None:
    response = rig.client().post("/buy", content=BODY, headers=rig.assertion_headers())
    assert response.status_code == 200
    assert response.json() == {"platform": "ios", "decision": "allow", "echo": BODY.decode()}
    stored = asyncio.run(rig.store.get_key(rig.key_id))
    assert stored is not None and stored.counter == 1
    assert rig.metrics.count(route="/buy", reason="verified") == 1


def test_replayed_assertion_is_refused(rig: Rig) -> None:
    client = rig.client()
    headers = rig.assertion_headers()
    assert client.post("/buy", content=BODY, headers=headers).status_code == 200
    replay = client.post("/buy", content=BODY, headers=headers)
    assert replay.status_code == 401
    assert error_code(replay) == "apple.counter_invalid"


def test_assertion_over_another_body_is_refused(rig: Rig) -> None:
    headers = rig.assertion_headers(b'{"item":"gold","quantity":1000}')
    response = rig.client().post("/buy", content=BODY, headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "apple.signature_invalid"


def test_unknown_and_revoked_keys_are_refused(rig: Rig) -> None:
    stranger = rig.phone.generate_key()
    headers = {
        KEY_ID_HEADER: stranger,
        ASSERTION_HEADER: b64_encode(rig.phone.generate_assertion(stranger, BODY)),
    }
    response = rig.client().post("/buy", content=BODY, headers=headers)
    assert (response.status_code, error_code(response)) == (401, "key.unknown")
    asyncio.run(rig.store.revoke_key(rig.key_id, datetime.now(UTC)))
    response = rig.client().post("/buy", content=BODY, headers=rig.assertion_headers())
    assert (response.status_code, error_code(response)) == (403, "key.revoked")


def test_missing_proof_is_refused_in_enforce_and_counted_in_monitor(rig: Rig) -> None:
    response = rig.client().post("/buy", content=BODY)
    assert (response.status_code, error_code(response)) == (401, "token.missing")
    watched = rig.client(Mode.MONITOR).post("/buy", content=BODY)
    assert watched.status_code == 200
    assert watched.json()["platform"] is None
    assert rig.metrics.count(reason="missing", action="allowed", mode="monitor") == 1
    assert rig.metrics.count(reason="missing", action="refused", mode="enforce") == 1


def test_play_integrity_token_bound_to_the_body_passes_once(rig: Rig) -> None:
    client = rig.client()
    headers = rig.play_headers()
    response = client.post("/buy", content=BODY, headers=headers)
    assert response.status_code == 200
    assert response.json()["platform"] == "android"
    replay = client.post("/buy", content=BODY, headers=headers)
    assert (replay.status_code, error_code(replay)) == (409, "token.consumed")


def test_play_integrity_token_for_another_body_is_refused(rig: Rig) -> None:
    headers = rig.play_headers(b"something else")
    response = rig.client().post("/buy", content=BODY, headers=headers)
    assert (response.status_code, error_code(response)) == (401, "google.request_hash_mismatch")


def test_oversized_body_is_413_even_in_monitor_mode(rig: Rig) -> None:
    big = b"x" * ((1 << 20) + 1)
    response = rig.client(Mode.MONITOR).post("/buy", content=big)
    assert (response.status_code, error_code(response)) == (413, "request.too_large")


def test_play_verdict_refusal_is_403_with_the_rule_as_code(rig: Rig) -> None:
    headers = rig.play_headers(licensing="UNLICENSED")
    response = rig.client().post("/buy", content=BODY, headers=headers)
    assert (response.status_code, error_code(response)) == (403, "google.unlicensed")


# The outcome matrix every inline adapter answers identically (WSGI, Flask and Django too).


@pytest.fixture
def shared_rig(tmp_path: Path) -> Iterator[SharedRig]:
    r = SharedRig(tmp_path)
    yield r
    r.close()


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(shared_rig: SharedRig, case: Case, mode: Mode) -> None:
    async def handler(request: Request) -> JSONResponse:
        proof = getattr(request.state, "app_integrity", None)
        return JSONResponse(
            {
                "platform": proof.platform if proof else None,
                "decision": proof.decision if proof else None,
                "echo": (await request.body()).decode(),
            }
        )

    app = Starlette(
        routes=[Route(p, handler, methods=["POST"]) for p in ROUTES],
        middleware=[
            Middleware(
                InlineMiddleware,
                verifier=shared_rig.verifier,
                routes=ROUTES,
                mode=mode,
                metrics=shared_rig.metrics,
                max_body_bytes=MAX_BODY,
            )
        ],
    )
    client = TestClient(app)

    def send(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
        response = client.post(path, headers=headers, content=body)
        return response.status_code, response.json()

    run_case(shared_rig, case, mode, send)


@pytest.mark.parametrize(
    "policy",
    [RoutePolicy(require_token=False), RoutePolicy(binding_header="Authorization")],
    ids=["optional-proof", "header-binding"],
)
def test_policies_inline_mode_cannot_honour_fail_at_start_up(rig: Rig, policy: RoutePolicy) -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never reached")

    with pytest.raises(ConfigError):
        InlineMiddleware(app, rig.verifier, {"/buy": policy})  # type: ignore[arg-type]


def test_the_wsgi_inline_middleware_refuses_them_too(rig: Rig) -> None:
    from appintegrity.web.wsgi import InlineWSGIMiddleware

    with pytest.raises(ConfigError):
        InlineWSGIMiddleware(
            lambda environ, start_response: [],
            rig.verifier,
            {"/buy": RoutePolicy(require_token=False)},
        )


def test_a_development_key_does_not_pass_a_production_verifier(rig: Rig) -> None:
    key_id = rig.phone.generate_key()
    now = datetime.now(UTC)
    development = DeviceKey(
        key_id=key_id,
        app_id=IOS_APP,
        platform="ios",
        public_key=rig.phone.public_key(key_id),
        counter=0,
        environment="development",
        receipt=None,
        risk_metric=None,
        created_at=now,
        last_seen_at=now,
    )
    assert asyncio.run(rig.store.add_key(development))
    assertion = rig.phone.generate_assertion(key_id, BODY)
    headers = {KEY_ID_HEADER: key_id, ASSERTION_HEADER: b64_encode(assertion)}
    response = rig.client().post("/buy", content=BODY, headers=headers)
    assert (response.status_code, error_code(response)) == (401, "apple.environment_mismatch")
    stored = asyncio.run(rig.store.get_key(key_id))
    assert stored is not None and stored.counter == 0


def test_inline_middleware_in_a_mounted_sub_app_checks_the_sub_apps_routes(rig: Rig) -> None:
    async def handler(request: Request) -> JSONResponse:
        return JSONResponse({"ran": True})

    sub = Starlette(
        routes=[Route("/buy", handler, methods=["POST"])],
        middleware=[
            Middleware(InlineMiddleware, verifier=rig.verifier, routes={"/buy": RoutePolicy()})
        ],
    )
    client = TestClient(Starlette(routes=[Mount("/api", app=sub)]))
    refused = client.post("/api/buy", content=BODY)
    assert (refused.status_code, error_code(refused)) == (401, "token.missing")
    allowed = client.post("/api/buy", content=BODY, headers=rig.assertion_headers())
    assert (allowed.status_code, allowed.json()) == (200, {"ran": True})
