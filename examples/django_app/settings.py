"""Settings of the Django shop: a stateless JSON API (no database, no sessions, no CSRF).

App integrity comes from the environment (defaults suit ``make serve``):
``APPINTEGRITY_SERVICE_URL`` (http://127.0.0.1:8080), ``APPINTEGRITY_ISSUER`` (the service
URL), ``APPINTEGRITY_AUDIENCE`` (the issuer), ``APPINTEGRITY_MODE`` (``enforce`` or
``monitor``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def app_integrity_from_env(env: Mapping[str, str]) -> dict[str, object]:
    """``APP_INTEGRITY`` (keys: ``appintegrity.web.config``) for a service at the env's URL."""
    service_url = env.get("APPINTEGRITY_SERVICE_URL", "http://127.0.0.1:8080").rstrip("/")
    issuer = env.get("APPINTEGRITY_ISSUER", service_url)
    return {
        "ISSUER": issuer,
        "AUDIENCE": env.get("APPINTEGRITY_AUDIENCE", issuer),
        "JWKS_URL": f"{service_url}/.well-known/jwks.json",  # verified locally, keys cached
        "CONSUMER_URL": service_url,  # limited-use tokens are consumed through the service
        "MODE": env.get("APPINTEGRITY_MODE", "enforce"),
        # The middleware protects these paths; /redeem uses the @protect decorator instead.
        "ROUTES": {
            "/purchases": {"refuse_debug": True},  # money moves: a real device, "allow"
            "/premium": {"accept_limit": True},  # degraded devices (and debug builds) may read
        },
    }


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
MIDDLEWARE = ["appintegrity.web.django.AppIntegrityMiddleware"]
APP_INTEGRITY = app_integrity_from_env(os.environ)
