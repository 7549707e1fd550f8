"""The WSGI middleware under Werkzeug's test Client: every outcome, both modes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from web_support import (
    AS_WSGI_TEXT,
    CASES,
    HEADER,
    POLICIES,
    SUBJECT,
    Case,
    World,
    bound_to_utf8_header,
    check_case,
)
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from appintegrity.testing.jwks import JwksServer
from appintegrity.tokens import HttpJwks, SigningKey, build_jwks
from appintegrity.web import Mode, Protector, RoutePolicy
from appintegrity.web.wsgi import AppIntegrityWSGIMiddleware


def inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    claims = environ.get("app_integrity")
    body = json.dumps({"sub": claims.subject if claims else None}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def make_client(protector: Protector) -> Client:
    return Client(AppIntegrityWSGIMiddleware(inner, protector, routes=POLICIES))


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(world: World, case: Case, mode: Mode) -> None:
    response = make_client(world.protector(mode)).get(case.path, headers=case.headers(world))
    check_case(world, case, mode, response.status_code, response.get_json())


def test_limited_use_token_passes_exactly_once_from_blocking_code(world: World) -> None:
    client = make_client(world.protector())
    token = world.token(limited_use=True)
    assert client.post("/once", headers={HEADER: token}).get_json() == {"sub": SUBJECT}
    second = client.post("/once", headers={HEADER: token})
    assert second.status_code == 409
    assert second.get_json()["error"]["code"] == "token.consumed"


def test_unknown_kid_refreshes_the_jwks_over_http(tmp_path: Path) -> None:
    server = JwksServer()
    try:
        world = World(tmp_path, jwks=HttpJwks(server.url, min_refresh_interval=0))
        server.document = build_jwks([world.key])
        client = make_client(world.protector())
        assert client.get("/plain", headers={HEADER: world.token()}).status_code == 200
        rotated = SigningKey.generate()
        server.document = build_jwks([world.key, rotated])
        assert client.get("/plain", headers={HEADER: world.token(key=rotated)}).status_code == 200
        assert server.requests == 2
        server.fail = True
        stranger = world.token(key=SigningKey.generate())
        response = client.get("/plain", headers={HEADER: stranger})
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "token.unverifiable"
        world.close()
    finally:
        server.close()


def test_head_is_checked_by_the_get_pattern_under_flask(world: World) -> None:
    app = Flask(__name__)
    ran: list[str] = []

    @app.get("/premium")
    def premium() -> dict[str, bool]:
        ran.append(request.method)
        return {"premium": True}

    app.wsgi_app = AppIntegrityWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, world.protector(), routes={"GET /premium": RoutePolicy()}
    )
    client = app.test_client()
    assert client.head("/premium").status_code == 401
    assert client.head("/premium", headers={HEADER: world.token()}).status_code == 200
    assert ran == ["HEAD"]


def test_a_trailing_slash_does_not_skip_an_exact_pattern(world: World) -> None:
    app = Flask(__name__)
    app.url_map.strict_slashes = False  # common for JSON APIs: /purchases/ is /purchases

    @app.post("/purchases")
    def purchase() -> dict[str, bool]:
        return {"purchased": True}

    app.wsgi_app = AppIntegrityWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, world.protector(), routes={"/purchases": RoutePolicy()}
    )
    client = app.test_client()
    refused = client.post("/purchases/")
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (401, "token.missing")
    allowed = client.post("/purchases/", headers={HEADER: world.token()})
    assert (allowed.status_code, allowed.get_json()) == (200, {"purchased": True})


def test_a_bound_header_is_hashed_as_the_bytes_received(world: World) -> None:
    headers = {HEADER: bound_to_utf8_header(world), "Authorization": AS_WSGI_TEXT}
    response = make_client(world.protector()).get("/bound", headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"sub": SUBJECT})


def test_a_lower_case_method_is_checked_by_the_upper_case_pattern(world: World) -> None:
    """A WSGI server may pass a request line's "post" through (Werkzeug's own does); Flask
    routes it to the POST view, so the "POST /buy" pattern must cover it too."""
    app = Flask(__name__)

    @app.post("/buy")
    def buy() -> dict[str, bool]:
        return {"bought": True}

    app.wsgi_app = AppIntegrityWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, world.protector(), routes={"POST /buy": RoutePolicy()}
    )

    def call(method: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        environ = EnvironBuilder(path="/buy", method="POST", headers=headers).get_environ()
        environ["REQUEST_METHOD"] = method  # as the request line wrote it
        body, status, _ = run_wsgi_app(app, environ)
        return status, json.loads(b"".join(body))

    for method in ("post", "Post"):
        status, body = call(method, {})
        assert (status, body["error"]["code"]) == ("401 Unauthorized", "token.missing"), method
    assert call("post", {HEADER: world.token()}) == ("200 OK", {"bought": True})
