"""Debug tokens per app are capped (App Check allows 20): over HTTP and with the CLI, creating
one more than the app's limit of non-revoked tokens is refused with ``debug_token.limit``."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from appintegrity.cli import main
from appintegrity.errors import ConfigError
from appintegrity.service import create_app, load_config
from appintegrity.service.server import BackgroundServer

from .conftest import ADMIN_KEY, ANDROID_APP, IOS_APP, IOS_DEV_APP, Kit, error_of

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextlib.contextmanager
def serving(kit: Kit, directory: Path, **overrides: Any) -> Iterator[httpx.Client]:
    """A service on loopback; ``overrides``: ``server`` settings and per-app settings by id."""
    raw = kit.raw_config(
        store=f"sqlite:///{directory / 'service.db'}", **overrides.pop("server", {})
    )
    for app in raw["apps"]:
        app.update(overrides.get(app["id"], {}))
    app = create_app(kit.config(raw))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def create(client: httpx.Client, app_id: str, name: str = "CI") -> httpx.Response:
    return client.post(
        "/v1/admin/debug-tokens", json={"appId": app_id, "name": name}, headers=ADMIN
    )


def revoke(client: httpx.Client, token_id: str) -> None:
    answer = client.post(f"/v1/admin/debug-tokens/{token_id}/revoke", headers=ADMIN)
    assert answer.status_code == 200, answer.text


def listed(client: httpx.Client, app_id: str) -> list[dict[str, Any]]:
    answer = client.get("/v1/admin/debug-tokens", params={"appId": app_id}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    tokens: list[dict[str, Any]] = answer.json()["tokens"]
    return tokens


# -- HTTP ------------------------------------------------------------------------------------------


def test_the_twenty_first_debug_token_is_refused_until_one_is_revoked(
    kit: Kit, tmp_path: Path
) -> None:
    with serving(kit, tmp_path) as client:
        made = [create(client, ANDROID_APP, f"runner {i}") for i in range(20)]
        assert [r.status_code for r in made] == [201] * 20

        refused = create(client, ANDROID_APP, "one too many")
        assert refused.status_code == 409
        assert error_of(refused) == "debug_token.limit"
        message = refused.json()["error"]["message"]
        assert "20 active debug tokens" in message and "limit is 20" in message
        assert "secret" not in refused.json()
        assert len(listed(client, ANDROID_APP)) == 20  # nothing was stored

        # Another app has its own count.
        assert create(client, IOS_APP).status_code == 201

        # Revoked tokens do not count: revoking one makes room for exactly one.
        revoke(client, made[0].json()["tokenId"])
        again = create(client, ANDROID_APP, "replacement")
        assert again.status_code == 201, again.text
        assert create(client, ANDROID_APP).status_code == 409
        tokens = listed(client, ANDROID_APP)
        assert len(tokens) == 21
        assert sum(t["revokedAt"] is None for t in tokens) == 20


def test_the_server_limit_and_an_apps_own_limit(kit: Kit, tmp_path: Path) -> None:
    with serving(
        kit,
        tmp_path,
        server={"max_debug_tokens_per_app": 2},
        **{IOS_APP: {"max_debug_tokens": 1}, ANDROID_APP: {"max_debug_tokens": 3}},
    ) as client:
        statuses = {
            app_id: [create(client, app_id).status_code for _ in range(4)]
            for app_id in (IOS_APP, IOS_DEV_APP, ANDROID_APP)
        }
        assert statuses == {
            IOS_APP: [201, 409, 409, 409],  # its own limit, below the server's
            IOS_DEV_APP: [201, 201, 409, 409],  # the server's
            ANDROID_APP: [201, 201, 201, 409],  # its own limit, above the server's
        }
        refused = create(client, IOS_APP)
        assert error_of(refused) == "debug_token.limit"
        assert "limit is 1" in refused.json()["error"]["message"]


def test_openapi_documents_the_409(kit: Kit, tmp_path: Path) -> None:
    with serving(kit, tmp_path) as client:
        spec = client.get("/openapi.json").json()
    assert "409" in spec["paths"]["/v1/admin/debug-tokens"]["post"]["responses"]


def test_limits_are_validated_and_android_apps_keep_them_out_of_the_policy(kit: Kit) -> None:
    raw = kit.raw_config()
    raw["apps"][2]["max_debug_tokens"] = 5
    config = kit.config(raw)
    android = config.app(ANDROID_APP)
    assert android is not None and android.max_debug_tokens == 5
    for bad in ({"max_debug_tokens_per_app": 0}, {"max_debug_tokens_per_app": "many"}):
        with pytest.raises(ConfigError):
            kit.config(server=bad)
    raw = kit.raw_config()
    raw["apps"][0]["max_debug_tokens"] = 0
    with pytest.raises(ConfigError):
        kit.config(raw)


# -- CLI -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return Run(status, out.getvalue(), err.getvalue())


def write_config(directory: Path, limit: int) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[server]
store = "sqlite:///service.db"
admin_key = "{ADMIN_KEY}"

[[apps]]
id = "{IOS_APP}"
platform = "ios"
max_debug_tokens = {limit}
"""
    )
    return path


def cli_create(config: Path, name: str = "CI") -> Run:
    return cli("debug-token", "create", "--app", IOS_APP, "--name", name, "--config", str(config))


def test_cli_refuses_a_token_over_the_limit_and_counts_what_the_service_counts(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, 2)
    first, second = cli_create(config), cli_create(config)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    token_id = first.stdout.split()[2]
    assert token_id.startswith("dt_")

    refused = cli_create(config, "third")
    assert refused.returncode == 1
    assert refused.stdout == ""  # no secret printed
    assert "error: debug_token.limit:" in refused.stderr
    assert "already has 2 active debug tokens, its limit is 2" in refused.stderr

    # The service on the same store counts the CLI's tokens.
    with (
        BackgroundServer(create_app(load_config(config, env={}))) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        over = create(client, IOS_APP)
        assert (over.status_code, error_of(over)) == (409, "debug_token.limit")

    assert cli("debug-token", "revoke", token_id, "--config", str(config)).returncode == 0
    assert cli_create(config, "replacement").returncode == 0
    assert cli_create(config).returncode == 1


def test_cli_with_only_a_store_url_uses_the_default_of_twenty(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'bare.db'}"

    def make() -> Run:
        return cli("debug-token", "create", "--app", "any.app", "--name", "n", "--store", store)

    assert [make().returncode for _ in range(20)] == [0] * 20
    refused = make()
    assert refused.returncode == 1
    assert "limit is 20" in refused.stderr
