"""Policies of ``@protect`` views are checked with the configured protector when the
configuration is built (the URLconf's views), or on the view's first call (any other view),
never left to pass requests they cannot honour."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path
from django_support import configure_django
from inline_support import Rig
from web_support import HEADER, World

from appintegrity.errors import ConfigError
from appintegrity.web import Protector, RoutePolicy
from appintegrity.web.django import configured, protect

configure_django(__name__)


def view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


once = protect(RoutePolicy(require_limited_use=True))(view)
bound = protect(RoutePolicy(binding_header="Authorization"))(view)
plain = protect()(view)

# The decorated views sit one include() deep, as in most projects.
urlpatterns = [path("api/", include([path("once", once), path("bound", bound)])), path("", plain)]


@pytest.fixture
def without_consumer(world: World) -> Protector:
    protector = world.protector()
    protector.consumer = None
    return protector


def test_a_decorated_view_the_protector_cannot_serve_fails_at_configuration(
    without_consumer: Protector, world: World
) -> None:
    options = {"PROTECTOR": without_consumer, "ROUTES": {}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], APP_INTEGRITY=options):
        with pytest.raises(ValueError, match="no consumer"):
            configured()
        with pytest.raises(ValueError, match="no consumer"):
            Client().get("/", headers={HEADER: world.token()})


def test_inline_mode_refuses_a_decorated_header_binding_at_configuration(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        options = {"PROTECTOR": rig.protector(), "ROUTES": {}}
        with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], APP_INTEGRITY=options):
            with pytest.raises(ConfigError, match="bind"):
                configured()
    finally:
        rig.close()


class NoViews:
    """A URLconf serving nothing: what a configuration finds when views live elsewhere."""

    urlpatterns: tuple[object, ...] = ()


def test_a_view_outside_the_urlconf_is_checked_on_its_first_call(
    without_consumer: Protector, world: World
) -> None:
    # e.g. a class-based view's method decorated with method_decorator(protect(...)).
    elsewhere = protect(RoutePolicy(require_limited_use=True))(view)
    request = RequestFactory().get("/elsewhere", headers={HEADER: world.token()})
    options = {"PROTECTOR": without_consumer, "ROUTES": {}}
    with override_settings(ROOT_URLCONF=NoViews, APP_INTEGRITY=options):
        configured()
        with pytest.raises(ValueError, match="no consumer"):
            elsewhere(request)
