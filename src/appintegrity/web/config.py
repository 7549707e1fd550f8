"""Build a ``Protector`` from a plain mapping (Django's ``settings.APP_INTEGRITY``, env, TOML).

Keys: ``ISSUER``, ``AUDIENCE`` (string or list), one of ``JWKS_URL`` / ``JWKS_FILE`` /
``JWKS`` (the document itself), and optionally ``LEEWAY_SECONDS`` (30), ``MODE``
(``enforce`` / ``monitor``), ``HEADER`` (``X-App-Integrity``), ``CONSUMER_URL`` (the
service's base URL, for limited-use tokens), ``ROUTES`` (pattern → policy fields or None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from appintegrity.errors import ConfigError
from appintegrity.tokens import AppTokenVerifier, HttpJwks, JwksFile, JwksSource, StaticJwks
from appintegrity.web.consumers import ServiceTokenConsumer
from appintegrity.web.policy import Mode, RoutePolicy, RouteTable
from appintegrity.web.protector import DEFAULT_HEADER, Protector

_POLICY_FIELDS = {f.name for f in fields(RoutePolicy)}


def policy_from_mapping(value: Mapping[str, Any] | RoutePolicy | None) -> RoutePolicy | None:
    """A ``RoutePolicy`` from ``{"accept_limit": true, ...}`` (upper- or lower-case keys)."""
    if value is None or isinstance(value, RoutePolicy):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"a route policy is a mapping, found {type(value).__name__}")
    options = {str(k).lower(): v for k, v in value.items()}
    unknown = set(options) - _POLICY_FIELDS
    if unknown:
        raise ConfigError(f"unknown route policy options: {sorted(unknown)}")
    if "mode" in options and options["mode"] is not None:
        options["mode"] = Mode(options["mode"])
    return RoutePolicy(**options)


def routes_from_mapping(routes: Mapping[str, Any] | None) -> RouteTable:
    if routes is None:
        return RouteTable({})
    return RouteTable({pattern: policy_from_mapping(p) for pattern, p in routes.items()})


def jwks_source_from_mapping(settings: Mapping[str, Any]) -> JwksSource:
    if settings.get("JWKS_URL"):
        return HttpJwks(str(settings["JWKS_URL"]))
    if settings.get("JWKS_FILE"):
        return JwksFile(str(settings["JWKS_FILE"]))
    if settings.get("JWKS"):
        return StaticJwks(settings["JWKS"])
    raise ConfigError("set one of JWKS_URL, JWKS_FILE or JWKS")


def protector_from_mapping(settings: Mapping[str, Any]) -> Protector:
    """The protector the mapping describes (see the module doc for its keys)."""
    for required in ("ISSUER", "AUDIENCE"):
        if not settings.get(required):
            raise ConfigError(f"app integrity setting {required} is required")
    try:
        mode = Mode(settings.get("MODE", Mode.ENFORCE))
    except ValueError as exc:
        raise ConfigError(f"MODE must be 'enforce' or 'monitor': {exc}") from exc
    verifier = AppTokenVerifier(
        jwks_source_from_mapping(settings),
        issuer=str(settings["ISSUER"]),
        audience=settings["AUDIENCE"],
        leeway_seconds=int(settings.get("LEEWAY_SECONDS", 30)),
    )
    consumer_url = settings.get("CONSUMER_URL")
    return Protector(
        verifier,
        mode=mode,
        header=str(settings.get("HEADER", DEFAULT_HEADER)),
        consumer=ServiceTokenConsumer(str(consumer_url)) if consumer_url else None,
    )
