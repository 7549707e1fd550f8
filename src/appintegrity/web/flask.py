"""Flask: an extension with a route decorator; the handler's value on ``flask.g.app_integrity``.

app_integrity = AppIntegrity(app, protector)

@app.post("/purchases")
@app_integrity.protect(RoutePolicy(require_limited_use=True))
def purchase():
    claims = g.app_integrity

With a ``Protector`` the route checks app tokens and ``g.app_integrity`` holds their claims;
with an ``InlineProtector`` (inline mode) it checks the device proof the request carries and
``g.app_integrity`` holds the ``DeviceProof``. The proof signs the raw body, so nothing may
read ``request.form`` before the check (a ``before_request`` handler, Flask-WTF's
``CSRFProtect``): Werkzeug parses a form without keeping the body (400 ``request.invalid``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from appintegrity.web.inline import InlineProtector, InlineVerdict, proof_headers
from appintegrity.web.policy import DEFAULT_POLICY, RoutePolicy
from appintegrity.web.protector import Protector, bound_value

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION_KEY = "app_integrity"
AnyProtector = Protector | InlineProtector
BODY_READ_BEFORE = (
    "the request body was read before its device proof could be checked: nothing may read"
    " request.form before the protected view (a before_request handler, Flask-WTF's"
    " CSRFProtect), or it must call request.get_data() first so that the body is kept"
)


class AppIntegrity:
    """The Flask extension. Each app keeps its own protector (in ``app.extensions``), so one
    extension object shared by an app factory never lets one app's settings leak into another's.

    Every ``protect`` policy is checked with every app's protector at start-up: when it is
    decorated, for the apps initialised by then, and by ``init_app`` for those decorated before.
    """

    def __init__(self, app: Flask | None = None, protector: AnyProtector | None = None) -> None:
        self.protector = protector
        self._policies: list[RoutePolicy] = []
        self._protectors: list[AnyProtector] = []
        if app is not None:
            self.init_app(app, protector)

    def init_app(self, app: Flask, protector: AnyProtector | None = None) -> None:
        chosen = protector or self.protector
        if chosen is None:
            raise ValueError("AppIntegrity needs a Protector or an InlineProtector")
        for policy in self._policies:
            chosen.validate(policy)
        if self.protector is None:
            self.protector = chosen
        if all(known is not chosen for known in self._protectors):
            self._protectors.append(chosen)
        app.extensions[EXTENSION_KEY] = chosen

    def _protector(self) -> AnyProtector:
        active = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(active, Protector | InlineProtector):
            raise RuntimeError("AppIntegrity was not initialised on this app with a Protector")
        return active

    def protect(self, policy: RoutePolicy | None = None) -> Callable[[F], F]:
        """Decorate a view: refuse it (JSON 401/403/409/413/503) unless the check passes."""
        chosen = policy or DEFAULT_POLICY
        for protector in self._protectors:
            protector.validate(chosen)
        self._policies.append(chosen)

        def decorate(view: F) -> F:
            @functools.wraps(view)
            def protected(*args: Any, **kwargs: Any) -> Any:
                protector = self._protector()
                rule = request.url_rule
                route = rule.rule if rule is not None else request.path
                if isinstance(protector, InlineProtector):
                    inline = _check_inline(protector, chosen, route)
                    if not inline.allowed:
                        return Response(inline.body(), inline.status, inline.headers())
                    g.app_integrity = inline.proof
                    return view(*args, **kwargs)
                binding_value = bound_value(chosen, request.headers.get)
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


def _check_inline(protector: InlineProtector, policy: RoutePolicy, route: str) -> InlineVerdict:
    """Read the body Flask's way (cached, so the view reads it again) within the limit."""
    limit = protector.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        return protector.too_large(policy, route=route)
    # Flask >= 3.1: a per-request limit that also bounds bodies without a Content-Length.
    # Werkzeug stops such a stream at the limit without an error, so allow one byte more:
    # a body that reaches it is over ours.
    previous = request.max_content_length
    request.max_content_length = limit + 1 if previous is None else min(previous, limit + 1)
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        return protector.too_large(policy, route=route)
    finally:
        request.max_content_length = previous
    if len(body) > limit:
        return protector.too_large(policy, route=route)
    if declared is not None and len(body) != declared:
        # Something parsed request.form before us: Werkzeug streams a form body without
        # keeping it, and get_data() then gives b"" (checking that would refuse a good proof
        # as apple.signature_invalid or google.request_hash_mismatch).
        return protector.unreadable(policy, route=route, message=BODY_READ_BEFORE)
    headers = proof_headers(lambda name: request.headers.get(name))
    return protector.check(headers, body, policy, route=route)
