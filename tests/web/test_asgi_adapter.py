"""The ASGI middleware under Starlette's own TestClient: every outcome, both modes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from web_support import (
    CASES,
    HEADER,
    POLICIES,
    SUBJECT,
    UTF8_AUTHORIZATION,
    Case,
    World,
    bound_to_utf8_header,
    check_case,
    unreachable_jwks_world,
)

from appintegrity.testing.jwks import JwksServer
from appintegrity.tokens import HttpJwks, SigningKey, build_jwks
from appintegrity.web import Mode, Protector, RoutePolicy
from appintegrity.web.asgi import AppIntegrityMiddleware, route_path


async def handler(request: Request) -> JSONResponse:
    claims = getattr(request.state, "app_integrity", None)
    return JSONResponse({"sub": claims.subject if claims else None})


def make_client(protector: Protector) -> TestClient:
    app = Starlette(
        routes=[Route(path, handler, methods=["GET", "POST"]) for path in POLICIES],
        middleware=[Middleware(AppIntegrityMiddleware, protector=protector, routes=POLICIES)],
    )
    return TestClient(app)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(world: World, case: Case, mode: Mode) -> None:
    client = make_client(world.protector(mode))
    response = client.get(case.path, headers=case.headers(world))
    check_case(world, case, mode, response.status_code, response.json())


def test_unprotected_route_passes_without_counting(world: World) -> None:
    response = make_client(world.protector()).get("/open")
    assert response.status_code == 200
    assert world.metrics.count() == 0


def test_limited_use_token_passes_exactly_once_through_the_sqlite_store(world: World) -> None:
    client = make_client(world.protector())
    token = world.token(limited_use=True)
    first = client.post("/once", headers={HEADER: token})
    second = client.post("/once", headers={HEADER: token})
    assert first.status_code == 200 and first.json() == {"sub": SUBJECT}
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "token.consumed"
    assert world.metrics.count(route="/once", reason="consumed", action="refused") == 1


def test_limited_use_replay_is_counted_but_allowed_in_monitor_mode(world: World) -> None:
    client = make_client(world.protector(Mode.MONITOR))
    token = world.token(limited_use=True)
    assert client.post("/once", headers={HEADER: token}).status_code == 200
    assert client.post("/once", headers={HEADER: token}).status_code == 200
    assert world.metrics.count(route="/once", reason="consumed", action="allowed") == 1


def test_unknown_kid_triggers_one_jwks_refresh_over_http(tmp_path: Path) -> None:
    server = JwksServer()
    try:
        world = World(tmp_path, jwks=HttpJwks(server.url, min_refresh_interval=0))
        server.document = build_jwks([world.key])
        client = make_client(world.protector())
        assert client.get("/plain", headers={HEADER: world.token()}).status_code == 200
        rotated = SigningKey.generate()
        server.document = build_jwks([rotated, world.key])
        response = client.get("/plain", headers={HEADER: world.token(key=rotated)})
        assert response.status_code == 200
        assert server.requests == 2
        world.close()
    finally:
        server.close()


def test_unreachable_jwks_is_503_never_500(tmp_path: Path) -> None:
    with unreachable_jwks_world(tmp_path) as (world, _):
        response = make_client(world.protector()).get("/plain", headers={HEADER: world.token()})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "token.unverifiable"
        assert response.headers["retry-after"]
        monitor = make_client(world.protector(Mode.MONITOR))
        assert monitor.get("/plain", headers={HEADER: world.token()}).status_code == 200
        assert world.metrics.count(reason="unverifiable") == 2


def test_logs_say_why_and_never_carry_the_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = world.token(debug=True)
    with caplog.at_level(logging.DEBUG, logger="appintegrity.web"):
        make_client(world.protector(Mode.MONITOR)).get("/nodebug", headers={HEADER: token})
    records = [r for r in caplog.records if r.name == "appintegrity.web"]
    assert any(getattr(r, "reason", None) == "debug" for r in records)
    for record in records:
        assert token not in record.getMessage()
        assert token.split(".")[2] not in record.getMessage()


def test_lifespan_scopes_pass_through(world: World) -> None:
    seen: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    middleware = AppIntegrityMiddleware(app, world.protector(), routes=POLICIES)
    import asyncio

    asyncio.run(middleware({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


async def stream(websocket: WebSocket) -> None:
    claims = websocket.scope.get("state", {}).get("app_integrity")
    await websocket.accept()
    await websocket.send_json({"sub": claims.subject if claims else None})
    await websocket.close()


def ws_client(protector: Protector) -> TestClient:
    app = Starlette(
        routes=[WebSocketRoute("/premium/stream", stream), WebSocketRoute("/open", stream)],
        middleware=[
            Middleware(
                AppIntegrityMiddleware,
                protector=protector,
                routes={"/premium/*": RoutePolicy(), "/open": None},
            )
        ],
    )
    return TestClient(app)


@pytest.mark.parametrize(
    "headers",
    [{}, {HEADER: "not-a-token"}],
    ids=["missing", "invalid"],
)
def test_a_websocket_handshake_without_a_valid_token_is_closed_before_the_app_runs(
    world: World, headers: dict[str, str]
) -> None:
    with pytest.raises(WebSocketDisconnect) as info:
        with ws_client(world.protector()).websocket_connect("/premium/stream", headers=headers):
            pass
    assert info.value.code == 1008
    assert world.metrics.count(route="/premium/*", action="refused") == 1


def test_a_websocket_handshake_with_a_valid_token_gets_the_claims(world: World) -> None:
    client = ws_client(world.protector())
    with client.websocket_connect("/premium/stream", headers={HEADER: world.token()}) as ws:
        assert ws.receive_json() == {"sub": SUBJECT}


def test_websockets_pass_in_monitor_mode_and_on_open_routes(world: World) -> None:
    with ws_client(world.protector(Mode.MONITOR)).websocket_connect("/premium/stream") as ws:
        assert ws.receive_json() == {"sub": None}
    with ws_client(world.protector()).websocket_connect("/open") as ws:
        assert ws.receive_json() == {"sub": None}
    assert world.metrics.count(route="/premium/*", reason="missing", action="allowed") == 1


def test_a_mounted_sub_app_matches_its_routes_without_the_mount_prefix(world: World) -> None:
    # Starlette's Mount (as uvicorn --root-path) keeps the prefix in scope["path"] and puts it
    # in scope["root_path"]: the routes to protect are the sub-app's own.
    sub = Starlette(
        routes=[Route("/plain", handler)],
        middleware=[
            Middleware(AppIntegrityMiddleware, protector=world.protector(), routes=POLICIES)
        ],
    )
    client = TestClient(Starlette(routes=[Mount("/api", app=sub)]))
    refused = client.get("/api/plain")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "token.missing")
    allowed = client.get("/api/plain", headers={HEADER: world.token()})
    assert (allowed.status_code, allowed.json()) == (200, {"sub": SUBJECT})
    assert world.metrics.count(route="/plain", reason="missing", action="refused") == 1


def test_a_fastapi_sub_application_is_protected_under_its_mount(world: World) -> None:
    from fastapi import FastAPI

    sub = FastAPI()
    sub.add_middleware(AppIntegrityMiddleware, protector=world.protector(), routes=POLICIES)

    @sub.post("/plain")
    async def plain() -> dict[str, bool]:
        return {"ran": True}

    main = FastAPI()
    main.mount("/v1", sub)
    refused = TestClient(main).post("/v1/plain")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "token.missing")


def test_route_path_removes_the_root_path_as_starlette_routes_on_it() -> None:
    assert route_path({"path": "/api/plain", "root_path": "/api"}) == "/plain"
    assert route_path({"path": "/plain", "root_path": "/api"}) == "/plain"
    assert route_path({"path": "/apiplain", "root_path": "/api"}) == "/apiplain"
    assert route_path({"path": "/api", "root_path": "/api"}) == "/"
    assert route_path({"path": "/plain", "root_path": ""}) == "/plain"
    assert route_path({"path": "/plain"}) == "/plain"


def test_head_is_checked_by_the_get_pattern_that_serves_it(world: World) -> None:
    ran: list[str] = []

    async def premium(request: Request) -> JSONResponse:
        ran.append(request.method)
        return JSONResponse({"premium": True}, headers={"x-balance": "1234"})

    app = Starlette(
        routes=[Route("/premium", premium, methods=["GET"])],
        middleware=[
            Middleware(
                AppIntegrityMiddleware,
                protector=world.protector(),
                routes={"GET /premium": RoutePolicy()},
            )
        ],
    )
    client = TestClient(app)
    refused = client.head("/premium")
    assert refused.status_code == 401 and "x-balance" not in refused.headers
    assert client.head("/premium", headers={HEADER: world.token()}).status_code == 200
    assert ran == ["HEAD"]
    assert world.metrics.count(route="GET /premium", reason="missing", action="refused") == 1


def test_a_bound_header_is_hashed_as_the_bytes_received(world: World) -> None:
    token = bound_to_utf8_header(world)
    client = make_client(world.protector())
    headers = [(b"x-app-integrity", token.encode()), (b"authorization", UTF8_AUTHORIZATION)]
    response = client.get("/bound", headers=headers)
    assert (response.status_code, response.json()) == (200, {"sub": SUBJECT})


def test_an_unreachable_jwks_is_named_in_the_log_not_in_the_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with unreachable_jwks_world(tmp_path) as (world, server):
        with caplog.at_level(logging.WARNING, logger="appintegrity.tokens"):
            response = make_client(world.protector()).get("/plain", headers={HEADER: world.token()})
        assert response.status_code == 503
        assert server.url not in response.text and "127.0.0.1" not in response.text
        assert any(server.url in record.getMessage() for record in caplog.records)
