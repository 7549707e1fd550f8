"""The FastAPI dependency under FastAPI's TestClient: every outcome, both modes."""

# No `from __future__ import annotations`: FastAPI must see the closures in Annotated[...].

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
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

from appintegrity.tokens import AppTokenClaims
from appintegrity.web import Mode, Protector, RoutePolicy, StoreTokenConsumer
from appintegrity.web.fastapi import install, require_app_token


def make_client(protector: Protector) -> TestClient:
    app = FastAPI()
    install(app, protector)
    for path, policy in POLICIES.items():
        if policy is None:

            async def open_route() -> dict[str, object]:
                return {"sub": None}

            app.get(path)(open_route)
            continue
        dependency = require_app_token(policy)

        async def route(
            claims: Annotated[AppTokenClaims | None, Depends(dependency)],
        ) -> dict[str, object]:
            return {"sub": claims.subject if claims else None}

        app.api_route(path, methods=["GET", "POST"])(route)
    return TestClient(app)


@pytest.mark.parametrize("mode", list(Mode), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outcome(world: World, case: Case, mode: Mode) -> None:
    response = make_client(world.protector(mode)).get(case.path, headers=case.headers(world))
    check_case(world, case, mode, response.status_code, response.json())


def test_limited_use_token_passes_exactly_once(world: World) -> None:
    client = make_client(world.protector())
    token = world.token(limited_use=True)
    assert client.post("/once", headers={HEADER: token}).json() == {"sub": SUBJECT}
    second = client.post("/once", headers={HEADER: token})
    assert (second.status_code, second.json()["error"]["code"]) == (409, "token.consumed")


def test_path_template_is_the_metrics_label(world: World) -> None:
    app = FastAPI()
    install(app, world.protector())

    @app.get("/items/{item_id}")
    async def item(
        item_id: int, claims: Annotated[AppTokenClaims | None, Depends(require_app_token())]
    ) -> dict[str, object]:
        return {"id": item_id}

    client = TestClient(app)
    for item_id in (1, 2, 3):
        assert client.get(f"/items/{item_id}", headers={HEADER: world.token()}).status_code == 200
    assert world.metrics.count(route="/items/{item_id}", reason="verified") == 3


def test_explicit_protector_needs_no_install(world: World) -> None:
    app = FastAPI()
    dependency = require_app_token(RoutePolicy(), protector=world.protector())

    @app.get("/x")
    async def x(claims: Annotated[AppTokenClaims | None, Depends(dependency)]) -> dict[str, str]:
        assert claims is not None
        return {"sub": claims.subject}

    assert TestClient(app).get("/x", headers={HEADER: world.token()}).json() == {"sub": SUBJECT}


def test_a_refusal_without_install_is_its_status_never_a_500(world: World) -> None:
    app = FastAPI()
    dependency = require_app_token(RoutePolicy(), protector=world.protector())

    @app.get("/x")
    async def x(claims: Annotated[AppTokenClaims | None, Depends(dependency)]) -> dict[str, str]:
        return {"sub": "never"}

    client = TestClient(app, raise_server_exceptions=False)
    missing = client.get("/x")
    assert missing.status_code == 401
    assert missing.json()["detail"]["code"] == "token.missing"
    assert missing.headers["www-authenticate"] == 'AppIntegrity realm="api"'
    blocked = client.get("/x", headers={HEADER: world.token(decision="block")})
    assert (blocked.status_code, blocked.json()["detail"]["code"]) == (403, "decision.blocked")


def test_install_answers_refusals_with_the_error_body_every_adapter_uses(world: World) -> None:
    response = make_client(world.protector()).get("/plain")
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "token.missing", "message": "the X-App-Integrity header is missing"}
    }
    assert response.headers["content-type"] == "application/json"


def _redeem_app(protector: Protector, *, install_first: bool) -> FastAPI:
    app = FastAPI()
    if install_first:
        install(app, protector)

    @app.post("/redeem")
    async def redeem(
        claims: Annotated[
            AppTokenClaims | None,
            Depends(require_app_token(RoutePolicy(require_limited_use=True))),
        ],
    ) -> dict[str, bool]:
        return {"ok": True}

    if not install_first:
        install(app, protector)
    return app


def test_a_route_declared_before_install_is_checked_by_install(world: World) -> None:
    protector = world.protector()
    protector.consumer = None
    with pytest.raises(ValueError, match="no consumer"):
        _redeem_app(protector, install_first=False)


def test_a_route_declared_after_install_is_checked_when_the_app_starts(world: World) -> None:
    protector = world.protector()
    protector.consumer = StoreTokenConsumer(world.store, leeway_seconds=0)  # < leeway 30 s
    app = _redeem_app(protector, install_first=True)
    with pytest.raises(ValueError, match="leeway"), TestClient(app):
        pass


def test_an_app_started_without_lifespan_checks_the_policy_on_first_use(world: World) -> None:
    protector = world.protector()
    protector.consumer = None
    client = TestClient(_redeem_app(protector, install_first=True))  # no `with`: no lifespan
    with pytest.raises(ValueError, match="no consumer"):
        client.post("/redeem", headers={HEADER: world.token(limited_use=True)})


def test_a_bound_header_is_hashed_as_the_bytes_received(world: World) -> None:
    token = bound_to_utf8_header(world)
    headers = [(b"x-app-integrity", token.encode()), (b"authorization", UTF8_AUTHORIZATION)]
    response = make_client(world.protector()).get("/bound", headers=headers)
    assert (response.status_code, response.json()) == (200, {"sub": SUBJECT})


def test_an_unreachable_jwks_is_503_unverifiable(tmp_path: Path) -> None:
    with unreachable_jwks_world(tmp_path) as (world, _):
        response = make_client(world.protector()).get("/plain", headers={HEADER: world.token()})
        assert (response.status_code, response.json()["error"]["code"]) == (
            503,
            "token.unverifiable",
        )
        assert response.headers["retry-after"] == "5"
        monitor = make_client(world.protector(Mode.MONITOR))
        assert monitor.get("/plain", headers={HEADER: world.token()}).status_code == 200
