"""Inline mode through the Flask extension under Flask's test_client: every outcome, both
modes; the ``DeviceProof`` on ``flask.g.app_integrity``."""

from __future__ import annotations

import io

import pytest
from flask import Flask, g, jsonify, request
from flask.typing import ResponseReturnValue
from inline_support import BODY, CASES, MAX_BODY, ROUTES, Case, Rig, run_case

from appintegrity.errors import ConfigError
from appintegrity.web import Mode, RoutePolicy
from appintegrity.web.flask import AppIntegrity
from appintegrity.web.inline import DeviceProof, InlineProtector


def make_app(protector: InlineProtector) -> Flask:
    app = Flask(__name__)
    integrity = AppIntegrity(app, protector)

    def view() -> ResponseReturnValue:
        proof = g.get("app_integrity")
        assert proof is None or isinstance(proof, DeviceProof)
        return jsonify(
            {
                "platform": proof.platform if proof else None,
                "decision": proof.decision if proof else None,
                "echo": request.get_data(as_text=True),
            }
        )

    for path, policy in ROUTES.items():
        target = view if policy is None else integrity.protect(policy)(view)
        app.add_url_rule(path, path.strip("/"), target, methods=["POST"])
    return app


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(rig: Rig, case: Case, mode: Mode) -> None:
    client = make_app(rig.protector(mode)).test_client()

    def send(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
        response = client.post(path, headers=headers, data=body)
        return response.status_code, response.get_json()

    run_case(rig, case, mode, send)


def test_view_still_parses_the_json_body(rig: Rig) -> None:
    app = Flask(__name__)
    integrity = AppIntegrity(app, rig.protector())

    @app.post("/buy")
    @integrity.protect()
    def buy() -> ResponseReturnValue:
        return jsonify({"quantity": request.get_json()["quantity"], "app": g.app_integrity.app_id})

    headers = {**rig.assertion_headers(), "Content-Type": "application/json"}
    response = app.test_client().post("/buy", headers=headers, data=BODY)
    assert response.get_json() == {"quantity": 1, "app": "TEAM123456.com.example.app"}


def test_an_apps_smaller_max_content_length_is_kept(rig: Rig) -> None:
    app = make_app(rig.protector())
    app.config["MAX_CONTENT_LENGTH"] = 10
    response = app.test_client().post("/buy", headers=rig.assertion_headers(), data=BODY)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request.too_large"


def test_chunked_body_over_the_limit_is_413(rig: Rig) -> None:
    big = b"x" * (MAX_BODY + 1)

    client = make_app(rig.protector(Mode.MONITOR)).test_client()
    # No Content-Length: only the per-request limit stops the read.
    response = client.post(
        "/buy",
        headers=rig.assertion_headers(big),
        input_stream=io.BytesIO(big),
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request.too_large"


def test_init_app_with_an_inline_protector(rig: Rig) -> None:
    integrity = AppIntegrity()
    inline_app = Flask("inline")
    integrity.init_app(inline_app, rig.protector())

    @inline_app.post("/buy")
    @integrity.protect()
    def buy() -> ResponseReturnValue:
        return jsonify({"platform": g.app_integrity.platform})

    client = inline_app.test_client()
    ok = client.post("/buy", headers=rig.play_headers(), data=BODY)
    assert ok.get_json() == {"platform": "android"}
    assert client.post("/buy", data=BODY).get_json()["error"]["code"] == "token.missing"


def test_an_app_factory_refuses_a_header_binding_decorated_before_init_app(rig: Rig) -> None:
    integrity = AppIntegrity()
    app = Flask("factory")

    @app.post("/bound")
    @integrity.protect(RoutePolicy(binding_header="Authorization"))
    def bound() -> ResponseReturnValue:
        return jsonify({"platform": g.app_integrity.platform})

    with pytest.raises(ConfigError, match="bind"):
        integrity.init_app(app, rig.protector())
