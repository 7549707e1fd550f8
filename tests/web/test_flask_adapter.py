"""The Flask extension under Flask's test_client: every outcome, both modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask, g, jsonify
from flask.typing import ResponseReturnValue
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
    unreachable_jwks_world,
)

from appintegrity.web import Mode, Protector, RoutePolicy
from appintegrity.web.flask import AppIntegrity


def make_app(protector: Protector) -> Flask:
    app = Flask(__name__)
    integrity = AppIntegrity(app, protector)

    def view() -> ResponseReturnValue:
        claims = g.get("app_integrity")
        return jsonify({"sub": claims.subject if claims else None})

    for path, policy in POLICIES.items():
        endpoint = path.strip("/")
        target = view if policy is None else integrity.protect(policy)(view)
        app.add_url_rule(path, endpoint, target, methods=["GET", "POST"])
    return app


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(world: World, case: Case, mode: Mode) -> None:
    client = make_app(world.protector(mode)).test_client()
    response = client.get(case.path, headers=case.headers(world))
    check_case(world, case, mode, response.status_code, response.get_json())


def test_limited_use_token_passes_exactly_once(world: World) -> None:
    client = make_app(world.protector()).test_client()
    token = world.token(limited_use=True)
    assert client.post("/once", headers={HEADER: token}).get_json() == {"sub": SUBJECT}
    second = client.post("/once", headers={HEADER: token})
    assert second.status_code == 409
    assert second.get_json()["error"]["code"] == "token.consumed"


def test_init_app_for_app_factories(world: World) -> None:
    integrity = AppIntegrity()
    app = Flask(__name__)
    integrity.init_app(app, world.protector())

    @app.get("/x")
    @integrity.protect()
    def x() -> ResponseReturnValue:
        return jsonify({"sub": g.app_integrity.subject})

    client = app.test_client()
    assert client.get("/x", headers={HEADER: world.token()}).get_json() == {"sub": SUBJECT}
    assert client.get("/x").status_code == 401


def test_one_extension_on_two_apps_keeps_each_apps_protector(world: World) -> None:
    integrity = AppIntegrity()
    enforcing, monitoring = Flask("enforcing"), Flask("monitoring")
    integrity.init_app(enforcing, world.protector(Mode.ENFORCE))
    integrity.init_app(monitoring, world.protector(Mode.MONITOR))
    for app in (enforcing, monitoring):

        @app.get("/x")
        @integrity.protect()
        def x() -> ResponseReturnValue:
            return jsonify({"ok": True})

    assert enforcing.test_client().get("/x").status_code == 401
    assert monitoring.test_client().get("/x").status_code == 200


def test_an_app_factory_checks_policies_decorated_before_init_app(world: World) -> None:
    integrity = AppIntegrity()
    app = Flask(__name__)

    @app.post("/redeem")
    @integrity.protect(RoutePolicy(require_limited_use=True))
    def redeem() -> ResponseReturnValue:
        return jsonify({"ok": True})

    protector = world.protector()
    protector.consumer = None
    with pytest.raises(ValueError, match="no consumer"):
        integrity.init_app(app, protector)


def test_a_policy_decorated_after_init_app_is_checked_with_every_apps_protector(
    world: World,
) -> None:
    integrity = AppIntegrity()
    without_consumer = world.protector()
    without_consumer.consumer = None
    integrity.init_app(Flask("with"), world.protector())
    integrity.init_app(Flask("without"), without_consumer)
    with pytest.raises(ValueError, match="no consumer"):
        integrity.protect(RoutePolicy(require_limited_use=True))


def test_a_bound_header_is_hashed_as_the_bytes_received(world: World) -> None:
    headers = {HEADER: bound_to_utf8_header(world), "Authorization": AS_WSGI_TEXT}
    response = make_app(world.protector()).test_client().get("/bound", headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"sub": SUBJECT})


def test_an_unreachable_jwks_is_503_unverifiable(tmp_path: Path) -> None:
    with unreachable_jwks_world(tmp_path) as (world, _):
        client = make_app(world.protector()).test_client()
        response = client.get("/plain", headers={HEADER: world.token()})
        assert (response.status_code, response.get_json()["error"]["code"]) == (
            503,
            "token.unverifiable",
        )
        assert response.headers["Retry-After"] == "5"
        monitor = make_app(world.protector(Mode.MONITOR)).test_client()
        assert monitor.get("/plain", headers={HEADER: world.token()}).status_code == 200
