"""Two instances on one store, with a slow periodic key refresh: a token signed with a key the
other instance has not loaded yet still verifies there, because an unknown kid makes the
verifying instance re-read the store at once."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx

from appintegrity.service import create_app
from appintegrity.service.server import BackgroundServer
from appintegrity.testing.client import IntegrityClient

from .conftest import ADMIN_KEY, IOS_APP, Kit, MutableClock


def _kid(token: str) -> str:
    header: dict[str, str] = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return header["kid"]


def test_a_key_rotated_on_one_instance_verifies_at_once_on_the_other(
    kit: Kit, tmp_path: Path
) -> None:
    raw = kit.raw_config(store=f"sqlite:///{tmp_path / 'shared.db'}")
    raw["tokens"]["key_refresh_seconds"] = 3600  # the periodic refresh will not help here
    raw["tokens"]["key_publish_seconds"] = 0  # and the new key signs at once
    config = kit.config(raw)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with (
        BackgroundServer(create_app(config)) as first,
        BackgroundServer(create_app(config)) as second,
        httpx.Client(timeout=30) as http,
    ):
        rotated = http.post(f"{first.url}/v1/admin/signing-keys/rotate", headers=admin)
        assert rotated.status_code == 200, rotated.text
        secret = http.post(
            f"{first.url}/v1/admin/debug-tokens",
            headers=admin,
            json={"appId": IOS_APP, "name": "ci"},
        )
        assert secret.status_code == 201, secret.text
        token = http.post(
            f"{first.url}/v1/debug/exchange",
            json={"appId": IOS_APP, "debugToken": secret.json()["secret"]},
        ).json()["appToken"]
        assert _kid(token) == rotated.json()["active"]
        published = {
            k["kid"] for k in http.get(f"{second.url}/.well-known/jwks.json").json()["keys"]
        }
        assert _kid(token) not in published  # the second instance has not reloaded yet

        answer = http.post(f"{second.url}/v1/tokens/verify", json={"token": token})
        assert answer.status_code == 200, answer.text
        assert answer.json()["claims"]["sub"] == IOS_APP
        published = {
            k["kid"] for k in http.get(f"{second.url}/.well-known/jwks.json").json()["keys"]
        }
        assert _kid(token) in published  # and its JWKS now carries the new key too


def test_a_rotated_key_is_published_before_it_signs(kit: Kit, tmp_path: Path) -> None:
    raw = kit.raw_config(store=f"sqlite:///{tmp_path / 'publish.db'}")
    raw["tokens"]["key_publish_seconds"] = 3600
    clock = MutableClock()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with (
        BackgroundServer(create_app(kit.config(raw), clock=clock)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        client = IntegrityClient(server.url, http=http)
        secret = http.post(
            "/v1/admin/debug-tokens", headers=admin, json={"appId": IOS_APP, "name": "ci"}
        ).json()["secret"]
        old_kid = _kid(client.exchange_debug_token(IOS_APP, secret).token)

        rotated = http.post("/v1/admin/signing-keys/rotate", headers=admin).json()
        new_kid = rotated["next"]
        assert rotated["active"] == old_kid and new_kid not in (None, old_kid)
        published = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
        assert {old_kid, new_kid} <= published
        # Published, not signing: an instance that has not loaded it yet cannot be named.
        assert _kid(client.exchange_debug_token(IOS_APP, secret).token) == old_kid

        clock.advance(seconds=3601)
        assert _kid(client.exchange_debug_token(IOS_APP, secret).token) == new_kid
        listed = http.get("/v1/admin/signing-keys", headers=admin).json()
        assert (listed["active"], listed["next"]) == (new_kid, None)
