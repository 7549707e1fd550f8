"""Django: a middleware and a view decorator; verified claims on ``request.app_integrity``.

Configure in ``settings.APP_INTEGRITY`` (keys in ``appintegrity.web.config``), or point
``settings.APP_INTEGRITY = {"PROTECTOR": "myproject.integrity.protector"}`` at a
``Protector`` you build yourself. Add ``"appintegrity.web.django.AppIntegrityMiddleware"``
to ``MIDDLEWARE`` to protect the ``ROUTES`` patterns; decorate views with ``@protect(...)``
for per-view policies (works with or without the middleware).

Inline mode (no service; see ``appintegrity.web.inline``): point ``PROTECTOR`` at an
``InlineProtector``, or at an ``InlineVerifier`` with ``MODE`` and ``MAX_BODY_BYTES``
(1 MiB); the same middleware and decorator then check the device proof each request carries
and put the ``DeviceProof`` on ``request.app_integrity``. The proof signs the raw body, so
``AppIntegrityMiddleware`` must come before anything that reads ``request.POST`` (e.g.
``CsrfViewMiddleware``): a multipart body read first is gone (400 ``request.invalid``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException
from django.urls import URLResolver, get_resolver
from django.utils.module_loading import import_string

from appintegrity.errors import ConfigError
from appintegrity.web.config import protector_from_mapping, routes_from_mapping
from appintegrity.web.inline import (
    MAX_BODY_BYTES,
    InlineProtector,
    InlineVerdict,
    InlineVerifier,
    proof_headers,
)
from appintegrity.web.policy import DEFAULT_POLICY, Mode, RoutePolicy, RouteTable, route_table
from appintegrity.web.protector import Protector, Verdict, bound_value

F = TypeVar("F", bound=Callable[..., Any])
_POLICY_ATTRIBUTE = "app_integrity_policy"
_DONE_ATTRIBUTE = "_app_integrity_verdict"
BODY_READ_BEFORE = (
    "the request body was read before its device proof could be checked: put"
    " appintegrity.web.django.AppIntegrityMiddleware in MIDDLEWARE before anything that reads"
    " the POST data (e.g. django.middleware.csrf.CsrfViewMiddleware)"
)

_lock = threading.RLock()
AnyProtector = Protector | InlineProtector
_configured: tuple[object, AnyProtector, RouteTable] | None = None


def _reset(**_: object) -> None:
    global _configured
    with _lock:
        _configured = None


setting_changed.connect(_reset)


def _inline_protector(verifier: InlineVerifier, options: Mapping[str, Any]) -> InlineProtector:
    try:
        mode = Mode(options.get("MODE", Mode.ENFORCE))
    except ValueError as exc:
        raise ConfigError(f"MODE must be 'enforce' or 'monitor': {exc}") from exc
    limit = int(options.get("MAX_BODY_BYTES", MAX_BODY_BYTES))
    return InlineProtector(verifier, mode=mode, max_body_bytes=limit)


def configured() -> tuple[AnyProtector, RouteTable]:
    """The protector and route table ``settings.APP_INTEGRITY`` describes (built once)."""
    global _configured
    options = getattr(settings, "APP_INTEGRITY", None)
    cached = _configured
    if cached is not None and cached[0] is options:
        return cached[1], cached[2]
    if not isinstance(options, Mapping):
        raise ConfigError("settings.APP_INTEGRITY must be a dict")
    with _lock:
        given = options.get("PROTECTOR")
        if isinstance(given, str):
            given = import_string(given)
        protector: AnyProtector
        if isinstance(given, Protector | InlineProtector):
            protector = given
        elif isinstance(given, InlineVerifier):
            protector = _inline_protector(given, options)
        else:
            protector = protector_from_mapping(options)
        routes = route_table(routes_from_mapping(options.get("ROUTES")), None, protector.validate)
        for policy in _decorated_policies():
            protector.validate(policy)
        _configured = (options, protector, routes)
    return protector, routes


def _decorated_policies() -> list[RoutePolicy]:
    """The policies of the ``@protect`` views the URLconf serves, to check at configuration
    (a decorated view the URLconf does not name is checked on its first call)."""
    if getattr(settings, "ROOT_URLCONF", None) is None:
        return []
    found: list[RoutePolicy] = []
    stack = list(get_resolver().url_patterns)
    while stack:
        entry = stack.pop()
        if isinstance(entry, URLResolver):
            stack.extend(entry.url_patterns)
            continue
        policy = getattr(entry.callback, _POLICY_ATTRIBUTE, None)
        if isinstance(policy, RoutePolicy):
            found.append(policy)
    return found


def _label(request: HttpRequest) -> str:
    match = request.resolver_match
    if match is not None and match.route:
        return "/" + match.route.lstrip("^")
    return request.path_info


def _inputs(
    request: HttpRequest, protector: Protector, policy: RoutePolicy
) -> tuple[str | None, bytes | None]:
    token = request.headers.get(protector.header)
    return (token.strip() if token else None), bound_value(policy, request.headers.get)


def _inline_verdict(
    request: HttpRequest, protector: InlineProtector, policy: RoutePolicy, label: str
) -> InlineVerdict:
    """Read the body Django's way (``request.body``, cached for the view) within the limit."""
    limit = protector.max_body_bytes
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return protector.too_large(policy, route=label)
    try:
        body = request.body
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE, the project's own limit
        return protector.too_large(policy, route=label)
    except RawPostDataException:
        # An earlier middleware read request.POST of a multipart body, which Django streams
        # without keeping the raw bytes: there is nothing left to check the proof against.
        return protector.unreadable(policy, route=label, message=BODY_READ_BEFORE)
    if len(body) > limit:
        return protector.too_large(policy, route=label)
    headers = proof_headers(lambda name: request.headers.get(name))
    return protector.check(headers, body, policy, route=label)


def _respond(request: HttpRequest, verdict: Verdict | InlineVerdict) -> HttpResponse | None:
    setattr(request, _DONE_ATTRIBUTE, verdict)
    if not verdict.allowed:
        response = HttpResponse(
            verdict.body(), status=verdict.status, content_type="application/json"
        )
        for name, value in verdict.headers():
            if name != "content-type":
                response[name] = value
        return response
    handed = verdict.proof if isinstance(verdict, InlineVerdict) else verdict.claims
    request.app_integrity = handed  # type: ignore[attr-defined]
    return None


def _check(
    request: HttpRequest, protector: AnyProtector, policy: RoutePolicy, label: str
) -> HttpResponse | None:
    if isinstance(protector, InlineProtector):
        return _respond(request, _inline_verdict(request, protector, policy, label))
    token, binding = _inputs(request, protector, policy)
    verdict = protector.check(token, policy, route=label, binding_value=binding)
    return _respond(request, verdict)


class AppIntegrityMiddleware:
    """Protects the ``ROUTES`` patterns, and views decorated with ``@protect``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.app_integrity = None  # type: ignore[attr-defined]
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        policy: RoutePolicy | None = getattr(view_func, _POLICY_ATTRIBUTE, None)
        protector, routes = configured()
        label = _label(request)
        if policy is None:
            match = routes.match(request.method or "GET", request.path_info)
            if match is None:
                return None
            label, policy = match
        return _check(request, protector, policy, label)


def protect(policy: RoutePolicy | None = None) -> Callable[[F], F]:
    """Decorate a view (sync or async) with a policy.

    The policy is checked with the configured protector when the configuration is built (for
    the views the URLconf serves) or on the view's first call, whichever comes first.
    """
    chosen = policy or DEFAULT_POLICY
    checked: AnyProtector | None = None

    def protector_for_view() -> AnyProtector:
        nonlocal checked
        protector, _ = configured()
        if protector is not checked:
            protector.validate(chosen)
            checked = protector
        return protector

    def decorate(view: F) -> F:
        if asyncio.iscoroutinefunction(view):

            @functools.wraps(view)
            async def protected_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                if getattr(request, _DONE_ATTRIBUTE, None) is None:
                    protector = protector_for_view()
                    if isinstance(protector, InlineProtector):
                        # The store runs on the verifier's own loop: wait for it off this one.
                        refused = await asyncio.to_thread(
                            _check, request, protector, chosen, _label(request)
                        )
                        if refused is not None:
                            return refused
                        return await view(request, *args, **kwargs)
                    token, binding = _inputs(request, protector, chosen)
                    verdict = await protector.check_async(
                        token, chosen, route=_label(request), binding_value=binding
                    )
                    refused = _respond(request, verdict)
                    if refused is not None:
                        return refused
                return await view(request, *args, **kwargs)

            setattr(protected_async, _POLICY_ATTRIBUTE, chosen)
            return cast(F, protected_async)

        @functools.wraps(view)
        def protected(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # The middleware already checked this request with this view's policy.
            if getattr(request, _DONE_ATTRIBUTE, None) is None:
                refused = _check(request, protector_for_view(), chosen, _label(request))
                if refused is not None:
                    return refused
            return view(request, *args, **kwargs)

        setattr(protected, _POLICY_ATTRIBUTE, chosen)
        return cast(F, protected)

    return decorate
