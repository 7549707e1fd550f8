"""Django async views consuming limited-use tokens in Redis, under Django's test Client.

Django's test Client (and a WSGI server) runs each async view on an event loop of its own;
the store must still be driven from one loop, or the second request finds the Redis pool
bound to a loop that is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from django_support import configure_django
from web_support import HEADER, SUBJECT, World

from appintegrity.store import open_store
from appintegrity.web import RoutePolicy, StoreTokenConsumer
from appintegrity.web.django import protect

configure_django(__name__)

pytestmark = pytest.mark.redis


@protect(RoutePolicy(require_limited_use=True))
async def once(request: HttpRequest) -> HttpResponse:
    claims = request.app_integrity  # type: ignore[attr-defined]
    return JsonResponse({"sub": claims.subject})


urlpatterns = [path("once", once)]


@pytest.fixture
def redis_world(tmp_path: Path, redis_url: str) -> Iterator[World]:
    prefix = f"web{uuid.uuid4().hex[:12]}:"
    world = World(tmp_path)
    world.consumer = StoreTokenConsumer(open_store(f"{redis_url}?prefix={prefix}"))
    yield world
    world.close()
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_an_async_view_consumes_each_limited_use_token_once_in_redis(redis_world: World) -> None:
    options = {"PROTECTOR": redis_world.protector(), "ROUTES": {}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], APP_INTEGRITY=options):
        client = Client()
        for _ in range(3):
            token = redis_world.token(limited_use=True)
            first = client.post("/once", headers={HEADER: token})
            assert (first.status_code, first.json()) == (200, {"sub": SUBJECT})
            replay = client.post("/once", headers={HEADER: token})
            assert (replay.status_code, replay.json()["error"]["code"]) == (409, "token.consumed")
