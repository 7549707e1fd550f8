"""Inline mode as WSGI middleware under Werkzeug's test Client: every outcome, both modes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from inline_support import BODY, CASES, MAX_BODY, ROUTES, Case, Rig, run_case
from werkzeug.test import Client, EnvironBuilder

from appintegrity.web import Mode, RoutePolicy
from appintegrity.web.inline import DeviceProof, InlineVerdict
from appintegrity.web.wsgi import InlineWSGIMiddleware, read_body


def handler(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    proof = environ.get("app_integrity")
    assert proof is None or isinstance(proof, DeviceProof)
    verdict = environ.get("app_integrity.verdict")
    protected = ROUTES.get(environ["PATH_INFO"]) is not None
    assert isinstance(verdict, InlineVerdict) if protected else verdict is None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    echo = environ["wsgi.input"].read(length).decode()
    body = json.dumps(
        {
            "platform": proof.platform if proof else None,
            "decision": proof.decision if proof else None,
            "echo": echo,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def app_for(rig: Rig, mode: Mode) -> InlineWSGIMiddleware:
    return InlineWSGIMiddleware(
        handler,
        rig.verifier,
        routes=ROUTES,
        mode=mode,
        metrics=rig.metrics,
        max_body_bytes=MAX_BODY,
    )


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(rig: Rig, case: Case, mode: Mode) -> None:
    client = Client(app_for(rig, mode))

    def send(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
        response = client.post(path, headers=headers, data=body)
        return response.status_code, response.get_json()

    run_case(rig, case, mode, send)


def test_refusal_is_json_with_content_length(rig: Rig) -> None:
    response = Client(app_for(rig, Mode.ENFORCE)).post("/buy", data=BODY)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.data)


def test_unprotected_route_is_not_checked(rig: Rig) -> None:
    response = Client(app_for(rig, Mode.ENFORCE)).post("/open", data=BODY)
    assert response.status_code == 200
    assert response.get_json() == {"platform": None, "decision": None, "echo": BODY.decode()}
    assert rig.metrics.count() == 0


def test_per_route_mode_overrides_the_middleware_mode(rig: Rig) -> None:
    app = InlineWSGIMiddleware(
        handler,
        rig.verifier,
        routes={"/buy": RoutePolicy(mode=Mode.MONITOR)},
        mode=Mode.ENFORCE,
        metrics=rig.metrics,
    )
    assert Client(app).post("/buy", data=BODY).status_code == 200
    assert rig.metrics.count(route="/buy", mode="monitor", reason="missing") == 1


def _environ(body: bytes, **extra: Any) -> dict[str, Any]:
    environ = EnvironBuilder(method="POST", path="/buy", data=body).get_environ()
    environ.update(extra)
    return environ


def test_read_body_puts_the_body_back() -> None:
    environ = _environ(BODY)
    assert read_body(environ, 1024) == BODY
    assert environ["wsgi.input"].read() == BODY
    assert environ["CONTENT_LENGTH"] == str(len(BODY))


def test_read_body_without_content_length_reads_a_terminated_stream_up_to_the_limit() -> None:
    chunked = {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
    environ = _environ(b"", **chunked, **{"wsgi.input": io.BytesIO(b"a" * 100)})
    assert read_body(environ, 100) == b"a" * 100
    environ = _environ(b"", **chunked, **{"wsgi.input": io.BytesIO(b"a" * 101)})
    assert read_body(environ, 100) is None
    # PEP 3333: no Content-Length and no terminated stream means no body; nothing is read.
    unread = io.BytesIO(b"a" * 10)
    environ = _environ(b"", CONTENT_LENGTH="", **{"wsgi.input": unread})
    assert read_body(environ, 100) == b""
    assert unread.tell() == 0


def test_declared_length_over_the_limit_is_refused_unread() -> None:
    stream = io.BytesIO(b"a" * 10)
    environ = _environ(b"", CONTENT_LENGTH="101", **{"wsgi.input": stream})
    assert read_body(environ, 100) is None
    assert stream.tell() == 0


def test_chunked_body_over_the_limit_is_413(rig: Rig) -> None:
    big = b"x" * (MAX_BODY + 1)
    headers = rig.assertion_headers(big)
    environ = _environ(b"", CONTENT_LENGTH="", **{"wsgi.input": io.BytesIO(big)})
    environ["wsgi.input_terminated"] = True
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: list[str] = []
    answer = app_for(rig, Mode.MONITOR)(environ, lambda status, hdrs: captured.append(status))
    assert captured == ["413 Request Entity Too Large"]
    assert json.loads(b"".join(answer))["error"]["code"] == "request.too_large"


def test_one_assertion_raced_from_many_threads_passes_once(rig: Rig) -> None:
    app = app_for(rig, Mode.ENFORCE)
    headers = rig.assertion_headers()

    def send(_: int) -> tuple[int, str | None]:
        response = Client(app).post("/buy", headers=headers, data=BODY)
        body = response.get_json()
        return response.status_code, body.get("error", {}).get("code")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = sorted(pool.map(send, range(8)), key=lambda a: a[0])
    assert answers[0] == (200, None)
    assert answers[1:] == [(401, "apple.counter_invalid")] * 7
    assert rig.counter() == 1
