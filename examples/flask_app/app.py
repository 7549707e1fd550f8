"""A small shop API whose sensitive routes only the genuine app can call (Flask).

Run it next to the integrity service (``make serve`` in another terminal)::

    .venv/bin/flask --app examples.flask_app.app run --port 8001

Configuration comes from the environment (defaults suit ``make serve``):
``APPINTEGRITY_SERVICE_URL`` (http://127.0.0.1:8080), ``APPINTEGRITY_ISSUER`` (the service
URL), ``APPINTEGRITY_AUDIENCE`` (the issuer), ``APPINTEGRITY_MODE`` (``enforce`` or
``monitor``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask, Response, g
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appintegrity.tokens import AppTokenClaims, AppTokenVerifier, HttpJwks
from appintegrity.web import Protector, RoutePolicy, ServiceTokenConsumer
from appintegrity.web.flask import AppIntegrity

# What each route asks of the app token.
PURCHASE = RoutePolicy(refuse_debug=True)  # money moves: a real device, decision "allow"
PREMIUM = RoutePolicy(accept_limit=True)  # degraded devices (and debug builds) may read
REDEEM = RoutePolicy(require_limited_use=True, refuse_debug=True)  # each token works once


def protector_from_env(env: Mapping[str, str]) -> Protector:
    """Verify tokens locally against the service's JWKS; consume limited-use ones through it."""
    service_url = env.get("APPINTEGRITY_SERVICE_URL", "http://127.0.0.1:8080").rstrip("/")
    issuer = env.get("APPINTEGRITY_ISSUER", service_url)
    verifier = AppTokenVerifier(
        HttpJwks(f"{service_url}/.well-known/jwks.json"),
        issuer=issuer,
        audience=env.get("APPINTEGRITY_AUDIENCE", issuer),
    )
    return Protector(
        verifier,
        mode=env.get("APPINTEGRITY_MODE", "enforce"),
        consumer=ServiceTokenConsumer(service_url),
    )


def app_summary(claims: AppTokenClaims | None) -> dict[str, object] | None:
    """What the view knows about the caller (None: monitor mode let an unverified call in)."""
    if claims is None:
        return None
    return {
        "id": claims.subject,
        "platform": claims.platform,
        "decision": claims.decision,
        "debug": claims.debug,
    }


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    """The app factory (``flask --app`` finds it)."""
    app = Flask(__name__)
    # One extension per app: its protector is this app's (see the README on init_app).
    integrity = AppIntegrity(app, protector_from_env(os.environ if env is None else env))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/purchases")
    @integrity.protect(PURCHASE)
    def purchase() -> dict[str, object]:
        return {"purchased": True, "app": app_summary(g.app_integrity)}

    @app.get("/premium")
    @integrity.protect(PREMIUM)
    def premium() -> dict[str, object]:
        claims: AppTokenClaims | None = g.app_integrity
        # A "limit" device still reads, in standard quality.
        quality = "hd" if claims is not None and claims.decision == "allow" else "sd"
        return {"content": "premium", "quality": quality, "app": app_summary(claims)}

    @app.post("/redeem")
    @integrity.protect(REDEEM)
    def redeem() -> dict[str, object]:
        claims: AppTokenClaims | None = g.app_integrity
        return {"credits": 50, "token_id": claims.jti if claims else None}

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus: what monitor mode saw (``appintegrity_web_requests_total``)."""
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    return app
