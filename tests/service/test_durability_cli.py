"""The real entry points: `appintegrity serve` killed with SIGKILL under load, and the admin CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from appintegrity.store import open_store
from appintegrity.store.base import DeviceKey
from appintegrity.testing.client import IntegrityClient, ServiceRefusal, UnexpectedResponse
from appintegrity.testing.ios import SoftwareIPhone

from .conftest import ADMIN_KEY, ANDROID_APP, IOS_APP, Kit

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(kit: Kit, directory: Path) -> Path:
    (directory / "test-root.pem").write_bytes(kit.ca.root_pem)
    raw = kit.raw_config()
    lines = [
        "[server]",
        'store = "sqlite:///service.db"',
        'issuer = "https://integrity.test"',
        f'admin_key = "{ADMIN_KEY}"',
        "[tokens]",
        "ttl_seconds = 600",
    ]
    for app in raw["apps"]:
        lines.append("[[apps]]")
        for key, value in app.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    return path


def start_server(config: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appintegrity",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the service did not start")


def test_acknowledged_registrations_and_counters_survive_sigkill(kit: Kit, tmp_path: Path) -> None:
    config = write_config(kit, tmp_path)
    port = free_port()
    process, url = start_server(config, port)
    acknowledged: dict[str, tuple[SoftwareIPhone, int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        with IntegrityClient(url, timeout=5) as client:
            while not stop.is_set():
                try:
                    phone = kit.iphone()
                    try:
                        key_id = client.register_iphone(phone).key_id
                    except ServiceRefusal:
                        continue
                    with lock:
                        acknowledged[key_id] = (phone, 0)
                    for _ in range(3):
                        try:
                            counter = client.assert_iphone(phone, key_id).counter
                        except ServiceRefusal:
                            continue
                        assert counter is not None
                        with lock:
                            acknowledged[key_id] = (phone, counter)
                except (httpx.HTTPError, UnexpectedResponse):
                    return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 5, "too little load reached the service before the kill"

    process, url = start_server(config, port)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            keys = client.get(
                "/v1/admin/keys",
                params={"appId": IOS_APP},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ).json()["keys"]
            stored = {k["keyId"]: k["counter"] for k in keys}
            for key_id, (_phone, counter) in acknowledged.items():
                assert key_id in stored, f"acknowledged registration {key_id} was lost"
                assert stored[key_id] >= counter, f"counter of {key_id} went backwards"
            # A surviving key keeps working after the restart.
            key_id, (phone, _) = next(iter(acknowledged.items()))
            while phone.counter(key_id) < stored[key_id]:
                phone.generate_assertion(key_id, "skip")
            token = IntegrityClient(url, http=client).assert_iphone(phone, key_id)
            assert token.counter is not None and token.counter > stored[key_id]
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the CLI -------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appintegrity", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_admin_cli_manages_debug_tokens_keys_and_signing_keys(kit: Kit, tmp_path: Path) -> None:
    config = str(write_config(kit, tmp_path))
    created = cli(
        "debug-token", "create", "--app", ANDROID_APP, "--name", "CI", "--config", config, "--json"
    )
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["secret"].startswith("aidbg_")
    listed = cli("debug-token", "list", "--config", config, "--json")
    rows = json.loads(listed.stdout)
    assert [r["token_id"] for r in rows] == [token["token_id"]]
    assert token["secret"] not in listed.stdout
    assert cli("debug-token", "revoke", token["token_id"], "--config", config).returncode == 0
    assert json.loads(cli("debug-token", "list", "--config", config, "--json").stdout)[0][
        "revoked_at"
    ]
    assert cli("debug-token", "revoke", "dt_nope", "--config", config).returncode == 1
    unknown_app = cli("debug-token", "create", "--app", "x.y", "--name", "n", "--config", config)
    assert unknown_app.returncode == 2

    first = cli("signing-key", "rotate", "--config", config)
    second = cli("signing-key", "rotate", "--config", config)
    assert first.returncode == second.returncode == 0
    keys = json.loads(cli("signing-key", "list", "--config", config, "--json").stdout)
    assert len(keys) == 2
    assert keys[0]["retired_at"] is None and keys[1]["retired_at"] is not None

    assert json.loads(cli("keys", "list", "--config", config, "--json").stdout) == []
    missing = cli("keys", "revoke", "A" * 43 + "=", "--config", config)
    assert missing.returncode == 1
    assert "no key" in missing.stderr


def test_admin_cli_works_on_a_store_url_and_the_config_env_var(kit: Kit, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'direct.db'}"
    assert cli("signing-key", "rotate", "--store", store).returncode == 0
    config = write_config(kit, tmp_path)
    listed = cli("signing-key", "list", env={"APPINTEGRITY_CONFIG": str(config)})
    assert listed.returncode == 0
    assert "(none)" in listed.stdout


def _add_device_key(store_url: str, key_id: str, point: bytes) -> None:
    """A registered key, as the service stores it on registration."""

    async def add() -> None:
        store = open_store(store_url)
        try:
            await store.migrate()
            now = datetime.now(UTC)
            await store.add_key(
                DeviceKey(key_id, IOS_APP, "ios", point, 0, "production", None, None, now, now)
            )
        finally:
            await store.close()

    asyncio.run(add())


def test_revoke_and_rotate_print_json_when_asked(kit: Kit, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'json.db'}"
    assert cli("db", "migrate", "--store", store).returncode == 0

    rotated = cli("signing-key", "rotate", "--store", store, "--json")
    assert rotated.returncode == 0, rotated.stderr
    listed = json.loads(cli("signing-key", "list", "--store", store, "--json").stdout)
    assert json.loads(rotated.stdout) == listed[0]

    created = cli(
        "debug-token", "create", "--app", IOS_APP, "--name", "CI", "--store", store, "--json"
    )
    token_id = json.loads(created.stdout)["token_id"]
    revoked = cli("debug-token", "revoke", token_id, "--store", store, "--json")
    assert revoked.returncode == 0, revoked.stderr
    tokens = json.loads(cli("debug-token", "list", "--store", store, "--json").stdout)
    assert json.loads(revoked.stdout) == {
        "token_id": token_id,
        "revoked_at": tokens[0]["revoked_at"],
    }

    phone = SoftwareIPhone(IOS_APP, ca=kit.ca)
    key_id = phone.generate_key()
    _add_device_key(store, key_id, phone.public_key(key_id))
    revoked = cli("keys", "revoke", key_id, "--store", store, "--json")
    assert revoked.returncode == 0, revoked.stderr
    keys = json.loads(cli("keys", "list", "--store", store, "--json").stdout)
    assert json.loads(revoked.stdout) == {"key_id": key_id, "revoked_at": keys[0]["revoked_at"]}


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "list"),
        ("keys", "revoke", "A" * 43 + "="),
        ("debug-token", "list"),
        ("debug-token", "revoke", "dt_x"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_commands_on_existing_rows_refuse_a_missing_sqlite_file(
    kit: Kit, tmp_path: Path, command: tuple[str, ...]
) -> None:
    mistyped = tmp_path / "mistyped.db"
    done = cli(*command, "--store", f"sqlite:///{mistyped}")
    assert done.returncode == 2
    assert done.stderr == (
        f"error: no SQLite database at {mistyped} (--store);"
        " `appintegrity db migrate --store URL` creates one\n"
    )
    config = write_config(kit, tmp_path)  # its store, service.db, does not exist yet
    done = cli(*command, "--config", str(config))
    assert done.returncode == 2
    assert f"no SQLite database at {tmp_path / 'service.db'}" in done.stderr
    assert not mistyped.exists() and not (tmp_path / "service.db").exists()


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "must be from 1 to 1000000, not 0"),
        ("-1", "must be from 1 to 1000000, not -1"),
        (str(10**30), "must be from 1 to 1000000"),
        ("ten", "not an integer: 'ten'"),
    ],
)
def test_keys_list_refuses_a_limit_out_of_range(tmp_path: Path, limit: str, message: str) -> None:
    store = f"sqlite:///{tmp_path / 'limits.db'}"
    assert cli("db", "migrate", "--store", store).returncode == 0
    listed = cli("keys", "list", "--store", store, "--limit", limit)
    assert listed.returncode == 2
    assert f"argument --limit: {message}" in listed.stderr
    assert "Traceback" not in listed.stderr
    assert listed.stdout == ""


@pytest.mark.parametrize(
    "text", ["[server]\nport = 'x'\n", "[[apps]]\nid = 'a'\nplatform = 'android'\n"]
)
def test_serve_refuses_an_invalid_config_with_exit_2(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_init_sample_writes_the_sample_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    result = cli("serve", "--config", str(path), "--init-sample", "--port", "not-a-port")
    assert result.returncode == 2  # argparse refuses the port before anything is written
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appintegrity",
            "serve",
            "--config",
            str(path),
            "--init-sample",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("the sample service did not start")
        assert path.read_text() == (REPO / "config" / "sample.toml").read_text()
        assert (path.parent / "appintegrity.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_with_several_workers_keeps_each_workers_info_log(kit: Kit, tmp_path: Path) -> None:
    """Workers are new processes: each must set up logging, or the one line per verification
    (INFO) would be lost. Each worker logs its signing keys at start-up; both lines appear."""
    config = write_config(kit, tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        command = [sys.executable, "-m", "appintegrity", "serve", "--config", str(config)]
        command += ["--port", str(port), "--workers", "2"]
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while log.read_text().count("signing keys loaded") < 2:
                assert time.monotonic() < deadline, log.read_text()
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=20)
    lines = [line for line in log.read_text().splitlines() if "signing keys loaded" in line]
    assert len(lines) == 2
    assert all(" INFO appintegrity.service " in line for line in lines), lines
