"""`appintegrity receipts refresh`: the real command (a subprocess) against a real SQLite store
and a fake of Apple's data server over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.cli import main
from appintegrity.encoding import b64_encode
from appintegrity.service import create_app, load_config
from appintegrity.service.server import BackgroundServer
from appintegrity.store import open_store
from appintegrity.testing.fake_apple import FakeAppleDataServer, ScriptedResponse
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
from appintegrity.testing.receipts import ReceiptAuthority

APP = "ABCDE12345.com.example.app"
PLAIN_APP = "ABCDE12345.com.example.plain"  # no [apps.receipt_refresh]
TEAM_ID = "ABCDE12345"
KEY_ID = "KEY1234567"


@dataclass
class World:
    config: Path
    ca: AppAttestCA
    authority: ReceiptAuthority
    apple: FakeAppleDataServer
    url: str

    def register(self, app_id: str = APP) -> str:
        """Register a fresh software iPhone's key over HTTP; returns its key id."""
        phone = SoftwareIPhone(
            app_id, ca=self.ca, receipt_factory=self.authority.attestation_receipt
        )
        key_id = phone.generate_key()
        with httpx.Client(base_url=self.url) as client:
            challenge = client.post("/v1/challenges", json={"purpose": "attestation"}).json()
            body = {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "challenge": challenge["challenge"],
                "token": b64_encode(phone.attest_key(key_id, challenge["challenge"])),
            }
            response = client.post("/v1/registrations", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["receipt"]["valid"] is True
        return key_id


def write_config(directory: Path, apple_url: str) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[server]
store = "sqlite:///service.db"
issuer = "https://integrity.test"

[[apps]]
id = "{APP}"
platform = "ios"
trust_roots = ["test-root.pem"]
receipt_trust_roots = ["receipt-root.pem"]
max_risk_metric = 3

[apps.receipt_refresh]
team_id = "{TEAM_ID}"
devicecheck_key_id = "{KEY_ID}"
devicecheck_private_key_file = "AuthKey_{KEY_ID}.p8"
base_url = "{apple_url}"
retries = 0
background = false

[[apps]]
id = "{PLAIN_APP}"
platform = "ios"
trust_roots = ["test-root.pem"]
receipt_trust_roots = ["receipt-root.pem"]
"""
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("cli-receipts")
    ca = AppAttestCA.generate()
    authority = ReceiptAuthority()
    devicecheck = ec.generate_private_key(ec.SECP256R1())
    (directory / "test-root.pem").write_bytes(ca.root_pem)
    (directory / "receipt-root.pem").write_text(authority.root_pem)
    (directory / f"AuthKey_{KEY_ID}.p8").write_bytes(
        devicecheck.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with FakeAppleDataServer(
        authority=authority, public_key=devicecheck.public_key(), team_id=TEAM_ID, key_id=KEY_ID
    ) as apple:
        config = write_config(directory, apple.url)
        with BackgroundServer(create_app(load_config(config, env={}))) as server:
            yield World(config, ca, authority, apple, server.url)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Run:
    """The command line's entry point in this process (one test below runs the real
    ``python -m appintegrity`` process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            status = exc.code if isinstance(exc.code, int) else 2
    return Run(status, out.getvalue(), err.getvalue())


def refresh(world: World, *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = cli("receipts", "refresh", "--config", str(world.config), "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return done.returncode, rows


def listed_metrics(world: World) -> dict[str, int | None]:
    done = cli("keys", "list", "--config", str(world.config), "--json")
    assert done.returncode == 0, done.stderr
    return {row["key_id"]: row["risk_metric"] for row in json.loads(done.stdout)}


def test_refresh_stores_new_receipts_and_keys_list_shows_their_metric(world: World) -> None:
    first, second = world.register(), world.register()
    world.apple.next_risk_metric = 7
    # Fresh receipts are not due before interval_hours; --all refreshes them all the same.
    assert refresh(world, "--app", APP) == (0, [])
    status, rows = refresh(world, "--app", APP, "--all")
    by_key = {row["key_id"]: row for row in rows}
    assert by_key[first]["status"] == by_key[second]["status"] == "updated"
    assert {by_key[first]["risk_metric"], by_key[second]["risk_metric"]} == {7, 1}
    assert status == 0
    metrics = listed_metrics(world)
    assert {metrics[first], metrics[second]} == {7, 1}

    # Right after a refresh Apple has nothing newer (304): the receipts stay, nothing fails.
    status, rows = refresh(world, "--key", first)
    assert status == 0
    assert [(r["key_id"], r["status"]) for r in rows] == [(first, "not_modified")]
    assert listed_metrics(world)[first] in (7, 1)


def age_receipt(world: World, key_id: str, age: timedelta) -> None:
    """Make a key's receipt look refreshed ``age`` ago (the store's own update, same bytes)."""

    async def go() -> None:
        store = open_store(load_config(world.config, env={}).server.store)
        try:
            key = await store.get_key(key_id)
            assert key is not None and key.receipt is not None
            then = datetime.now(UTC) - age
            assert await store.update_receipt(key_id, key.receipt, key.risk_metric, now=then)
        finally:
            await store.close()

    asyncio.run(go())


def test_refresh_takes_the_due_receipts_oldest_first(world: World) -> None:
    fresh, day_old, week_old = world.register(), world.register(), world.register()
    age_receipt(world, day_old, timedelta(hours=25))
    age_receipt(world, week_old, timedelta(days=7))
    # Receipts refreshed by earlier tests are fresh too: only these two are past 24 hours.
    status, rows = refresh(world, "--app", APP)
    assert status == 0
    assert [(r["key_id"], r["status"]) for r in rows] == [
        (week_old, "updated"),
        (day_old, "updated"),
    ]
    # Now they are fresh; nothing is due, and --limit bounds a run.
    assert refresh(world, "--app", APP) == (0, [])
    age_receipt(world, fresh, timedelta(hours=2))
    age_receipt(world, day_old, timedelta(hours=3))
    status, rows = refresh(world, "--app", APP, "--older-than", "1", "--limit", "1")
    assert [r["key_id"] for r in rows] == [day_old]
    status, rows = refresh(world, "--app", APP, "--older-than", "1")
    assert [r["key_id"] for r in rows] == [fresh]


def test_an_answer_without_a_newer_receipt_counts_as_checked(world: World) -> None:
    key_id = world.register()
    age_receipt(world, key_id, timedelta(days=2))
    world.apple.respond(304)
    assert refresh(world, "--app", APP) == (0, [_row(key_id, "not_modified")])
    assert refresh(world, "--app", APP) == (0, [])  # not due again for interval_hours


def _row(key_id: str, status: str) -> dict[str, Any]:
    return {
        "key_id": key_id,
        "app_id": APP,
        "status": status,
        "risk_metric": None,
        "reason": None,
        "message": None,
    }


def test_the_installed_command_refreshes_in_text_mode(world: World) -> None:
    key_id = world.register()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPINTEGRITY_")}
    done = subprocess.run(
        [sys.executable, "-m", "appintegrity", "receipts", "refresh", "--key", key_id],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "APPINTEGRITY_CONFIG": str(world.config)},
    )
    assert done.returncode == 0, done.stderr
    assert f"{key_id}  {APP}  updated  risk_metric=1" in done.stdout
    assert "1 receipt(s): 1 updated" in done.stdout


@pytest.mark.parametrize(
    ("answer", "exit_status", "status", "reason"),
    [
        (404, 0, "no_data", None),
        (429, 1, "failed", "apple.receipt_refresh_rate_limited"),
        (500, 1, "failed", "apple.receipt_refresh_unavailable"),
        (401, 1, "failed", "apple.receipt_refresh_unauthorized"),
    ],
)
def test_refresh_keeps_the_stored_receipt_when_apple_answers(
    world: World, answer: int, exit_status: int, status: str, reason: str | None
) -> None:
    key_id = world.register()
    world.apple.respond(answer)
    code, rows = refresh(world, "--key", key_id)
    assert code == exit_status
    assert [(r["status"], r["reason"], r["risk_metric"]) for r in rows] == [(status, reason, None)]
    assert listed_metrics(world)[key_id] is None
    # Apple answers again: the same key refreshes normally.
    code, rows = refresh(world, "--key", key_id)
    assert (code, rows[0]["status"], rows[0]["risk_metric"]) == (0, "updated", 1)


def test_refresh_stops_at_the_first_answer_that_ends_a_batch(world: World) -> None:
    """Apple refusing our DeviceCheck key (401) would refuse every other key too: one request,
    not one per due receipt, and the rest is left for the next run."""
    for _ in range(3):
        world.register()
    asked = len(world.apple.requests)
    world.apple.respond(401)
    done = cli("receipts", "refresh", "--config", str(world.config), "--json", "--all")
    rows = json.loads(done.stdout)
    assert done.returncode == 1
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("failed", "apple.receipt_refresh_unauthorized")
    ]
    assert len(world.apple.requests) - asked == 1
    assert "stopped: apple.receipt_refresh_unauthorized" in done.stderr


def test_a_new_receipt_that_does_not_validate_is_not_stored(world: World) -> None:
    key_id = world.register()
    code, rows = refresh(world, "--key", key_id)
    assert code == 0 and rows[0]["status"] == "updated"
    certificate = world.ca.root_certificate.public_bytes(serialization.Encoding.DER)
    forged = ReceiptAuthority().attestation_receipt(APP, certificate, b"x" * 32)
    world.apple.respond(ScriptedResponse(200, base64.b64encode(forged)))
    code, rows = refresh(world, "--key", key_id)
    assert code == 1
    assert (rows[0]["status"], rows[0]["reason"]) == ("invalid", "apple.receipt_invalid")
    assert listed_metrics(world)[key_id] == 1


@pytest.mark.parametrize(
    ("args", "exit_status", "message"),
    [
        (("--older-than", "-1"), 2, "--older-than must not be negative"),
        (("--older-than", "nan"), 2, "--older-than must be a finite number of hours"),
        (("--older-than", "inf"), 2, "--older-than must be a finite number of hours"),
        (("--older-than", "1e300"), 2, "--older-than must be at most 876000 hours"),
        (("--limit", "0"), 2, "argument --limit: must be from 1 to 1000000, not 0"),
        (("--limit", "-1"), 2, "argument --limit: must be from 1 to 1000000, not -1"),
        (("--limit", str(10**30)), 2, "argument --limit: must be from 1 to 1000000"),
        (("--limit", "many"), 2, "argument --limit: not an integer: 'many'"),
        (("--all", "--older-than", "3"), 2, "not allowed with argument"),
        (("--app", "ABCDE12345.com.unknown"), 2, "not a configured iOS app"),
        (("--app", PLAIN_APP), 2, "no [apps.receipt_refresh]"),
        (("--key", "A" * 43 + "="), 1, "no key"),
        (("--key", "not a key id"), 2, "not a key id"),
    ],
)
def test_refresh_usage_errors(
    world: World, args: tuple[str, ...], exit_status: int, message: str
) -> None:
    done = cli("receipts", "refresh", "--config", str(world.config), *args)
    assert done.returncode == exit_status, done.stderr
    assert message in done.stderr


def test_refresh_of_a_key_of_an_app_without_refresh_settings_is_refused(world: World) -> None:
    key_id = world.register(PLAIN_APP)
    done = cli("receipts", "refresh", "--config", str(world.config), "--key", key_id)
    assert done.returncode == 2
    assert PLAIN_APP in done.stderr


def test_refresh_without_a_config_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPINTEGRITY_CONFIG", raising=False)
    done = cli("receipts", "refresh", "--config", "")
    assert done.returncode == 2
    assert "--config" in done.stderr
