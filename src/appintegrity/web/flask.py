"""Flask: an extension with a route decorator; verified claims on ``flask.g.app_integrity``.

app_integrity = AppIntegrity(app, protector)

@app.post("/purchases")
@app_integrity.protect(RoutePolicy(require_limited_use=True))
def purchase():
    claims = g.app_integrity
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request

from appintegrity.web.policy import DEFAULT_POLICY, RoutePolicy
from appintegrity.web.protector import Protector

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION_KEY = "app_integrity"


class AppIntegrity:
    """The Flask extension. Each app keeps its own protector (in ``app.extensions``), so one
    extension object shared by an app factory never lets one app's settings leak into another's."""

    def __init__(self, app: Flask | None = None, protector: Protector | None = None) -> None:
        self.protector = protector
        if app is not None:
            self.init_app(app, protector)

    def init_app(self, app: Flask, protector: Protector | None = None) -> None:
        chosen = protector or self.protector
        if chosen is None:
            raise ValueError("AppIntegrity needs a Protector")
        if self.protector is None:
            self.protector = chosen
        app.extensions[EXTENSION_KEY] = chosen

    def _protector(self) -> Protector:
        active = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(active, Protector):
            raise RuntimeError("AppIntegrity was not initialised on this app with a Protector")
        return active

    def protect(self, policy: RoutePolicy | None = None) -> Callable[[F], F]:
        """Decorate a view: refuse it (JSON 401/403/503) unless the app token passes."""
        chosen = policy or DEFAULT_POLICY
        if self.protector is not None:
            self.protector.validate(chosen)

        def decorate(view: F) -> F:
            @functools.wraps(view)
            def protected(*args: Any, **kwargs: Any) -> Any:
                protector = self._protector()
                rule = request.url_rule
                route = rule.rule if rule is not None else request.path
                binding_value = (
                    request.headers.get(chosen.binding_header) if chosen.binding_header else None
                )
                token = request.headers.get(protector.header)
                verdict = protector.check(
                    token.strip() if token else None,
                    chosen,
                    route=route,
                    binding_value=binding_value,
                )
                if not verdict.allowed:
                    return Response(
                        verdict.body(), status=verdict.status, headers=verdict.headers()
                    )
                g.app_integrity = verdict.claims
                return view(*args, **kwargs)

            return cast(F, protected)

        return decorate
