"""Receipts and the fraud-risk metric, end to end over real HTTP: the receipt checked at
registration, refreshed through a fake of Apple's data server (real HTTP on loopback), and the
stored metric deciding assertions."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appintegrity.apple.receipt import ReceiptType, parse_receipt, verify_receipt
from appintegrity.errors import ConfigError, Reason
from appintegrity.service import create_app, parse_config
from appintegrity.service.apps import Apps
from appintegrity.service.config import ServiceConfig
from appintegrity.service.metrics import Metrics
from appintegrity.service.receipts import (
    BackgroundReceiptRefresher,
    RefreshOutcome,
    refresh_key_receipt,
)
from appintegrity.service.server import BackgroundServer
from appintegrity.store import open_store
from appintegrity.store.base import DeviceKey
from appintegrity.testing.fake_apple import FakeAppleDataServer, ScriptedResponse
from appintegrity.testing.ios import SoftwareIPhone
from appintegrity.testing.receipts import ReceiptAuthority, ReceiptDefect
from appintegrity.tokens import AppTokenVerifier, StaticJwks

from .conftest import IOS_APP, IOS_DEV_APP, Kit, MutableClock, Service, error_of

TEAM_ID = "ABCDE12345"
DEVICECHECK_KEY_ID = "KEY1234567"
MONITOR_APP = "ABCDE12345.com.example.monitor"
LIMIT_THRESHOLD = 5  # IOS_APP: limit above 5
BLOCK_THRESHOLD = 2  # IOS_DEV_APP and MONITOR_APP: block above 2


@dataclass
class Apple:
    """The receipt side of the test kit: Apple's receipt signer and its data server."""

    authority: ReceiptAuthority
    server: FakeAppleDataServer
    clock: MutableClock
    directory: Path

    def iphone(self, kit: Kit, app_id: str = IOS_APP, **kwargs: Any) -> SoftwareIPhone:
        return kit.iphone(app_id, receipt_factory=self.authority.attestation_receipt, **kwargs)


@pytest.fixture(scope="module")
def apple(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apple]:
    directory = tmp_path_factory.mktemp("receipts")
    authority = ReceiptAuthority()
    (directory / "receipt-root.pem").write_text(authority.root_pem)
    devicecheck = ec.generate_private_key(ec.SECP256R1())
    (directory / "AuthKey.p8").write_bytes(
        devicecheck.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "test-root.pem").write_bytes(kit.ca.root_pem)
    clock = MutableClock()
    server = FakeAppleDataServer(
        authority=authority,
        public_key=devicecheck.public_key(),
        team_id=TEAM_ID,
        key_id=DEVICECHECK_KEY_ID,
        clock=clock,
    )
    with server:
        yield Apple(authority, server, clock, directory)


def receipt_config(apple: Apple, db: Path, *, background: bool = False) -> dict[str, Any]:
    refresh = {
        "team_id": TEAM_ID,
        "devicecheck_key_id": DEVICECHECK_KEY_ID,
        "devicecheck_private_key_file": "AuthKey.p8",
        "base_url": apple.server.url,
        "retries": 0,
        "background": background,
        "poll_seconds": 0.1,
        "batch_size": 50,
    }
    ios = {"platform": "ios", "trust_roots": ["test-root.pem"]}
    return {
        "server": {
            "store": f"sqlite:///{db}",
            "issuer": "https://integrity.test",
            "admin_key": "test-admin-key-0123456789",
        },
        "tokens": {"ttl_seconds": 600},
        "apps": [
            {
                **ios,
                "id": IOS_APP,
                "receipt_trust_roots": ["receipt-root.pem"],
                "max_risk_metric": LIMIT_THRESHOLD,
                "receipt_refresh": refresh,
            },
            {
                **ios,
                "id": IOS_DEV_APP,
                "environment": "development",
                "receipt_trust_roots": ["receipt-root.pem"],
                "require_valid_receipt": True,
                "max_risk_metric": BLOCK_THRESHOLD,
                "risk_action": "block",
                "receipt_refresh": refresh,
            },
            {
                **ios,
                "id": MONITOR_APP,
                "mode": "monitor",
                "receipt_trust_roots": ["receipt-root.pem"],
                "max_risk_metric": BLOCK_THRESHOLD,
                "risk_action": "block",
                "receipt_refresh": refresh,
            },
        ],
    }


def run_service(apple: Apple, kit: Kit, raw: dict[str, Any]) -> Iterator[Service]:
    config = parse_config(raw, base_dir=apple.directory, env={})
    app = create_app(config, clock=apple.clock)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        try:
            yield Service(server.url, client, apple.clock, kit, config, config.server.store)
        finally:
            apple.clock.reset()


@pytest.fixture(scope="module")
def risky(apple: Apple, kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    db = tmp_path_factory.mktemp("risk-db") / "service.db"
    yield from run_service(apple, kit, receipt_config(apple, db))


@pytest.fixture(autouse=True)
def _fresh_fake(apple: Apple) -> Iterator[None]:
    yield
    apple.clock.reset()
    apple.server.next_risk_metric = None


# -- helpers -------------------------------------------------------------------------------------


def register(service: Service, phone: SoftwareIPhone) -> tuple[str, httpx.Response]:
    body = service.registration_body(phone)
    return body["keyId"], service.post("/v1/registrations", body)


def stored_key(service: Service, key_id: str) -> DeviceKey:
    async def get() -> DeviceKey:
        store = open_store(service.store_url)
        try:
            key = await store.get_key(key_id)
        finally:
            await store.close()
        assert key is not None
        return key

    return asyncio.run(get())


def refresh(service: Service, key_id: str) -> RefreshOutcome:
    """One refresh through the service's own code path, on the service's store."""

    async def go() -> RefreshOutcome:
        apps = Apps(service.config)
        store = open_store(service.store_url)
        try:
            key = await store.get_key(key_id)
            assert key is not None
            return await refresh_key_receipt(apps.ios(key.app_id), key, store, service.clock())
        finally:
            await apps.aclose()
            await store.close()

    return asyncio.run(go())


def with_metric(service: Service, apple: Apple, key_id: str, metric: int) -> None:
    apple.server.next_risk_metric = metric
    outcome = refresh(service, key_id)
    assert outcome.status == "updated", outcome
    assert stored_key(service, key_id).risk_metric == metric


def assertion(service: Service, phone: SoftwareIPhone, key_id: str) -> httpx.Response:
    return service.post("/v1/assertions", service.assertion_body(phone, key_id))


def claims_of(service: Service, token: str) -> Any:
    jwks = service.client.get("/.well-known/jwks.json").json()
    verifier = AppTokenVerifier(
        StaticJwks(jwks),
        issuer="https://integrity.test",
        audience="https://integrity.test",
        clock=lambda: service.clock().timestamp(),
    )
    return verifier.verify(token)


def receipt_count(service: Service, source: str, outcome: str, reason: str = "") -> float:
    text = service.client.get("/metrics").text
    prefix = (
        f'appintegrity_receipts_total{{outcome="{outcome}",reason="{reason}",source="{source}"}} '
    )
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def admin_keys(service: Service) -> dict[str, dict[str, Any]]:
    answer = service.client.get(
        "/v1/admin/keys", headers={"Authorization": "Bearer test-admin-key-0123456789"}
    )
    assert answer.status_code == 200, answer.text
    return {row["keyId"]: row for row in answer.json()["keys"]}


# -- registration --------------------------------------------------------------------------------


def test_registration_stores_a_valid_receipt_and_reports_it(risky: Service, apple: Apple) -> None:
    before = receipt_count(risky, "registration", "valid")
    phone = apple.iphone(risky.kit)
    key_id, response = register(risky, phone)
    assert response.status_code == 201, response.text
    body = response.json()
    assert {"keyId", "environment", "appToken", "expiresAt"} <= set(body)
    assert body["receipt"] == {"valid": True, "riskMetric": None}
    key = stored_key(risky, key_id)
    assert key.receipt is not None and key.risk_metric is None
    stored = verify_receipt(
        key.receipt,
        now=datetime.now(UTC),
        app_id=IOS_APP,
        public_key=key.public_key,
        trust_roots=[apple.authority.root_certificate],
    )
    assert stored.type is ReceiptType.ATTEST
    assert receipt_count(risky, "registration", "valid") == before + 1


def test_registration_stores_the_metric_a_receipt_carries(risky: Service, apple: Apple) -> None:
    def with_metric_factory(app_id: str, certificate: bytes, client_hash: bytes) -> bytes:
        return apple.authority.issue(
            app_id=app_id,
            attested_certificate_der=certificate,
            client_hash=client_hash,
            creation_time=datetime.now(UTC),
            risk_metric=3,
        )

    phone = risky.kit.iphone(IOS_APP, receipt_factory=with_metric_factory)
    key_id, response = register(risky, phone)
    assert response.status_code == 201, response.text
    assert response.json()["receipt"] == {"valid": True, "riskMetric": 3}
    assert stored_key(risky, key_id).risk_metric == 3
    assert admin_keys(risky)[key_id]["riskMetric"] == 3


def _foreign_authority(apple: Apple) -> Callable[[str, bytes, bytes], bytes]:
    return ReceiptAuthority().attestation_receipt


def _tampered(apple: Apple) -> Callable[[str, bytes, bytes], bytes]:
    def factory(app_id: str, certificate: bytes, client_hash: bytes) -> bytes:
        return apple.authority.issue(
            app_id=app_id,
            attested_certificate_der=certificate,
            client_hash=client_hash,
            creation_time=datetime.now(UTC),
            defect=ReceiptDefect.SIGNATURE,
        )

    return factory


def _other_app(apple: Apple) -> Callable[[str, bytes, bytes], bytes]:
    def factory(app_id: str, certificate: bytes, client_hash: bytes) -> bytes:
        return apple.authority.attestation_receipt("ABCDE12345.com.other", certificate, client_hash)

    return factory


BAD_RECEIPTS = {
    "signed by an untrusted authority": _foreign_authority,
    "signature over other bytes": _tampered,
    "naming another app": _other_app,
}


@pytest.mark.parametrize("defect", list(BAD_RECEIPTS))
def test_invalid_receipt_is_recorded_and_the_registration_still_succeeds(
    risky: Service, apple: Apple, defect: str
) -> None:
    before = receipt_count(risky, "registration", "invalid", Reason.APPLE_RECEIPT_INVALID)
    phone = risky.kit.iphone(IOS_APP, receipt_factory=BAD_RECEIPTS[defect](apple))
    key_id, response = register(risky, phone)
    assert response.status_code == 201, response.text
    assert response.json()["receipt"] == {"valid": False, "riskMetric": None}
    key = stored_key(risky, key_id)
    assert key.receipt is not None  # the raw bytes are kept for inspection
    assert key.risk_metric is None
    after = receipt_count(risky, "registration", "invalid", Reason.APPLE_RECEIPT_INVALID)
    assert after == before + 1


def test_attestation_without_a_receipt_is_recorded_as_missing(risky: Service) -> None:
    before = receipt_count(risky, "registration", "missing", Reason.APPLE_RECEIPT_INVALID)
    key_id, response = register(risky, risky.kit.iphone(IOS_APP))
    assert response.status_code == 201, response.text
    assert response.json()["receipt"] == {"valid": False, "riskMetric": None}
    assert stored_key(risky, key_id).receipt is None
    after = receipt_count(risky, "registration", "missing", Reason.APPLE_RECEIPT_INVALID)
    assert after == before + 1


@pytest.mark.parametrize("defect", list(BAD_RECEIPTS))
def test_app_requiring_a_valid_receipt_refuses_an_invalid_one(
    risky: Service, apple: Apple, defect: str
) -> None:
    phone = risky.kit.iphone(
        IOS_DEV_APP, environment="development", receipt_factory=BAD_RECEIPTS[defect](apple)
    )
    key_id, response = register(risky, phone)
    assert response.status_code == 401, response.text
    assert error_of(response) == "apple.receipt_invalid"
    assert key_id not in admin_keys(risky)


def test_app_requiring_a_valid_receipt_refuses_a_missing_one(risky: Service) -> None:
    phone = risky.kit.iphone(IOS_DEV_APP, environment="development")
    key_id, response = register(risky, phone)
    assert response.status_code == 401
    assert error_of(response) == "apple.receipt_invalid"
    assert key_id not in admin_keys(risky)


def test_app_requiring_a_valid_receipt_registers_a_valid_one(risky: Service, apple: Apple) -> None:
    phone = apple.iphone(risky.kit, IOS_DEV_APP, environment="development")
    _, response = register(risky, phone)
    assert response.status_code == 201, response.text
    assert response.json()["receipt"]["valid"] is True


# -- refresh -------------------------------------------------------------------------------------


def test_refresh_stores_the_new_receipt_and_its_metric(risky: Service, apple: Apple) -> None:
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    outcome = refresh(risky, key_id)
    assert (outcome.status, outcome.risk_metric) == ("updated", 1)
    key = stored_key(risky, key_id)
    assert key.risk_metric == 1
    assert key.receipt is not None and parse_receipt(key.receipt).type is ReceiptType.RECEIPT
    assert admin_keys(risky)[key_id]["riskMetric"] == 1
    # A day later Apple has a newer one, and the metric has grown.
    risky.clock.advance(hours=25)
    assert refresh(risky, key_id).risk_metric == 2
    assert stored_key(risky, key_id).risk_metric == 2


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (304, "not_modified", None),
        (404, "no_data", None),
        (429, "failed", Reason.APPLE_RECEIPT_REFRESH_RATE_LIMITED),
        (500, "failed", Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE),
        (503, "failed", Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE),
        (401, "failed", Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED),
    ],
)
def test_refresh_keeps_the_stored_receipt_when_apple_has_nothing_new_or_fails(
    risky: Service, apple: Apple, answer: int, status: str, reason: str | None
) -> None:
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    with_metric(risky, apple, key_id, 4)
    before = stored_key(risky, key_id)
    apple.server.respond(answer)
    outcome = refresh(risky, key_id)
    assert (outcome.status, outcome.reason) == (status, reason)
    assert outcome.risk_metric == 4
    after = stored_key(risky, key_id)
    assert (after.receipt, after.risk_metric) == (before.receipt, 4)


def test_refresh_refuses_an_answer_that_does_not_validate(risky: Service, apple: Apple) -> None:
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    before = stored_key(risky, key_id)
    assert before.receipt is not None
    forged = ReceiptAuthority().issue(
        app_id=IOS_APP,
        attested_certificate_der=parse_receipt(before.receipt).attested_certificate,
        client_hash=b"x" * 32,
        creation_time=datetime.now(UTC),
        type=ReceiptType.RECEIPT,
        risk_metric=0,
    )
    apple.server.respond(ScriptedResponse(200, base64.b64encode(forged)))
    outcome = refresh(risky, key_id)
    assert (outcome.status, outcome.reason) == ("invalid", Reason.APPLE_RECEIPT_INVALID)
    after = stored_key(risky, key_id)
    assert (after.receipt, after.risk_metric) == (before.receipt, None)


def test_refresh_refuses_a_stale_answer(risky: Service, apple: Apple) -> None:
    """Apple's step 5 for a receipt just fetched: created at most five minutes ago."""
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    before = stored_key(risky, key_id)
    assert before.receipt is not None
    stale = apple.authority.issue(
        app_id=IOS_APP,
        attested_certificate_der=parse_receipt(before.receipt).attested_certificate,
        client_hash=b"x" * 32,
        creation_time=datetime.now(UTC) - timedelta(hours=1),
        type=ReceiptType.RECEIPT,
        risk_metric=0,
    )
    apple.server.respond(ScriptedResponse(200, base64.b64encode(stale)))
    outcome = refresh(risky, key_id)
    assert (outcome.status, outcome.reason) == ("invalid", Reason.APPLE_RECEIPT_INVALID)
    assert "created at" in (outcome.message or "")
    assert stored_key(risky, key_id).receipt == before.receipt


# -- decisions -----------------------------------------------------------------------------------


def test_assertion_is_limited_above_the_apps_risk_threshold(risky: Service, apple: Apple) -> None:
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    with_metric(risky, apple, key_id, LIMIT_THRESHOLD)
    at_threshold = assertion(risky, phone, key_id)
    assert at_threshold.status_code == 200
    assert (at_threshold.json()["decision"], at_threshold.json()["reasons"]) == ("allow", [])

    risky.clock.advance(hours=25)
    with_metric(risky, apple, key_id, LIMIT_THRESHOLD + 1)
    answer = assertion(risky, phone, key_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["decision"] == "limit"
    assert body["reasons"] == ["apple.risk_metric_high"]
    claims = claims_of(risky, body["appToken"])
    assert claims.decision == "limit"
    assert list(claims.raw["reasons"]) == ["apple.risk_metric_high"]


def test_assertion_is_blocked_above_the_threshold_when_the_app_says_block(
    risky: Service, apple: Apple
) -> None:
    phone = apple.iphone(risky.kit, IOS_DEV_APP, environment="development")
    key_id, response = register(risky, phone)
    assert response.status_code == 201, response.text
    with_metric(risky, apple, key_id, BLOCK_THRESHOLD + 1)
    answer = assertion(risky, phone, key_id)
    assert answer.status_code == 403
    assert error_of(answer) == "decision.blocked"
    assert answer.json()["error"]["reasons"] == ["apple.risk_metric_high"]
    # The refused assertion still used its counter: replaying it cannot sneak through later.
    assert stored_key(risky, key_id).counter == 1


def test_monitor_mode_answers_block_with_a_token_and_counts_it(
    risky: Service, apple: Apple
) -> None:
    phone = apple.iphone(risky.kit, MONITOR_APP)
    key_id, _ = register(risky, phone)
    with_metric(risky, apple, key_id, BLOCK_THRESHOLD + 7)
    answer = assertion(risky, phone, key_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["decision"], body["reasons"]) == ("block", ["apple.risk_metric_high"])
    assert claims_of(risky, body["appToken"]).decision == "block"
    metrics = risky.client.get("/metrics").text
    assert (
        'appintegrity_verifications_total{kind="assertion",outcome="block_monitored",'
        'platform="ios",reason="apple.risk_metric_high"}'
    ) in metrics


def test_key_without_a_metric_is_allowed(risky: Service, apple: Apple) -> None:
    phone = apple.iphone(risky.kit, IOS_DEV_APP, environment="development")
    key_id, _ = register(risky, phone)
    answer = assertion(risky, phone, key_id)
    assert answer.status_code == 200
    assert (answer.json()["decision"], answer.json()["reasons"]) == ("allow", [])


# -- the background refresher --------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_background_refresh_renews_old_receipts_and_survives_apple_outages(
    apple: Apple, kit: Kit, tmp_path: Path
) -> None:
    raw = receipt_config(apple, tmp_path / "background.db", background=True)
    for service in run_service(apple, kit, raw):
        _background_scenario(apple, kit, service)


def _background_scenario(apple: Apple, kit: Kit, service: Service) -> None:
    phone = apple.iphone(kit)
    seen = len(apple.server.requests)
    key_id, response = register(service, phone)
    assert response.status_code == 201
    time.sleep(0.4)  # several polls: a fresh receipt is not due
    assert len(apple.server.requests) == seen
    assert admin_keys(service)[key_id]["riskMetric"] is None

    # Apple is down when the receipt falls due: requests keep being answered.
    apple.server.respond(503)
    service.clock.advance(hours=25)
    wait_for(lambda: len(apple.server.requests) > seen)
    assert [r.status for r in apple.server.requests[seen:]] == [503]
    answer = assertion(service, phone, key_id)
    assert answer.status_code == 200 and answer.json()["decision"] == "allow"
    assert admin_keys(service)[key_id]["riskMetric"] is None
    assert (
        receipt_count(service, "refresh", "failed", Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE) >= 1
    )

    # Not again before an hour has passed; then Apple answers.
    time.sleep(0.3)
    assert [r.status for r in apple.server.requests[seen:]] == [503]
    apple.server.next_risk_metric = 9
    service.clock.advance(hours=1, minutes=1)
    wait_for(lambda: admin_keys(service)[key_id]["riskMetric"] == 9)
    assert receipt_count(service, "refresh", "updated") >= 1
    limited = assertion(service, phone, key_id)
    assert limited.json()["decision"] == "limit"


def test_background_refresh_reaches_the_oldest_receipts_of_an_app_with_many_keys(
    risky: Service, apple: Apple, tmp_path: Path
) -> None:
    """The refresher asks the store for the receipts due, oldest first: keys registered long
    ago are refreshed even behind many newer keys (a scan of the newest keys never saw them)."""
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    template = stored_key(risky, key_id)
    now = apple.clock()

    def synthetic(name: str, created: datetime, refreshed: datetime) -> DeviceKey:
        # The real key's public key and receipt under other ids: Apple renews each.
        return replace(template, key_id=name, created_at=created, receipt_updated_at=refreshed)

    old = [
        synthetic(f"old-{days}", now - timedelta(days=90), now - timedelta(days=days))
        for days in (28, 30, 29)
    ]
    newer = [
        synthetic(f"new-{i}", now - timedelta(days=1, seconds=-i), now - timedelta(hours=1))
        for i in range(200)
    ]

    async def scenario() -> tuple[list[RefreshOutcome], list[RefreshOutcome], DeviceKey | None]:
        store = open_store(f"sqlite:///{tmp_path / 'many.db'}")
        apps = Apps(risky.config)
        try:
            await store.migrate()
            for key in [*old, *newer]:
                assert await store.add_key(key)
            # The old keys are beyond the newest 200, where a scan with a limit would stop.
            newest = {k.key_id for k in await store.list_keys(IOS_APP, 200)}
            assert not newest & {k.key_id for k in old}
            refresher = BackgroundReceiptRefresher(apps.ios(IOS_APP), store, apple.clock, Metrics())
            first = await refresher.run_once()
            second = await refresher.run_once()
            return first, second, await store.get_key("old-30")
        finally:
            await apps.aclose()
            await store.close()

    first, second, refreshed = asyncio.run(scenario())
    assert [(o.key_id, o.status) for o in first] == [
        ("old-30", "updated"),
        ("old-29", "updated"),
        ("old-28", "updated"),
    ]
    assert second == []  # refreshed now: not due for interval_hours
    assert refreshed is not None and refreshed.receipt_updated_at is not None
    assert refreshed.receipt_updated_at >= now
    assert refreshed.risk_metric == 1


def test_two_instances_refreshing_together_ask_apple_once_per_receipt(
    risky: Service, apple: Apple, tmp_path: Path
) -> None:
    """Two refreshers on one store (two instances) list the same due keys in the same poll;
    each receipt is claimed by one of them, so Apple is asked once per key, not twice."""
    phone = apple.iphone(risky.kit)
    key_id, _ = register(risky, phone)
    template = stored_key(risky, key_id)
    now = apple.clock()
    due = [
        replace(
            template,
            key_id=f"due-{i}",
            created_at=now - timedelta(days=40),
            receipt_updated_at=now - timedelta(days=30, seconds=i),
        )
        for i in range(4)
    ]

    async def scenario() -> list[list[RefreshOutcome]]:
        store = open_store(f"sqlite:///{tmp_path / 'two.db'}")
        apps = Apps(risky.config)
        try:
            await store.migrate()
            for key in due:
                assert await store.add_key(key)
            first, second = (
                BackgroundReceiptRefresher(apps.ios(IOS_APP), store, apple.clock, Metrics())
                for _ in range(2)
            )
            return list(await asyncio.gather(first.run_once(), second.run_once()))
        finally:
            await apps.aclose()
            await store.close()

    seen = len(apple.server.requests)
    outcomes = asyncio.run(scenario())
    refreshed = sorted(o.key_id for batch in outcomes for o in batch)
    assert refreshed == [k.key_id for k in due]  # every key once, by one instance or the other
    assert {o.status for batch in outcomes for o in batch} == {"updated"}
    assert len(apple.server.requests) - seen == len(due)


# -- configuration -------------------------------------------------------------------------------


def test_receipt_settings_load_with_paths_relative_to_the_file(
    apple: Apple, tmp_path: Path
) -> None:
    config: ServiceConfig = parse_config(
        receipt_config(apple, tmp_path / "x.db"), base_dir=apple.directory, env={}
    )
    ios = config.app(IOS_APP)
    assert ios is not None and ios.platform == "ios"
    assert ios.receipt_trust_roots == [apple.directory / "receipt-root.pem"]
    assert ios.receipt_refresh is not None
    assert ios.receipt_refresh.devicecheck_private_key_file == apple.directory / "AuthKey.p8"
    assert ios.receipt_refresh.interval_hours == 24
    assert (ios.risk_action, ios.require_valid_receipt) == ("limit", False)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"receipt_refresh": {"team_id": "T"}}, "devicecheck_key_id"),
        ({"risk_action": "ban"}, "risk_action"),
        ({"max_risk_metric": -1}, "max_risk_metric"),
        ({"receipt_trust_roots": ["missing.pem"]}, "receipt_trust_roots"),
        ({"receipt_refresh_typo": 1}, "receipt_refresh_typo"),
    ],
)
def test_bad_receipt_settings_are_config_errors(
    apple: Apple, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    raw = receipt_config(apple, tmp_path / "x.db")
    raw["apps"][0].update(change)
    with pytest.raises(ConfigError, match=expected):
        parse_config(raw, base_dir=apple.directory, env={})


def test_a_devicecheck_key_that_is_not_p256_is_a_config_error_without_its_content(
    apple: Apple, tmp_path: Path
) -> None:
    wrong = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "wrong.p8").write_bytes(wrong)
    raw = receipt_config(apple, tmp_path / "x.db")
    raw["apps"][0]["receipt_refresh"]["devicecheck_private_key_file"] = str(tmp_path / "wrong.p8")
    config = parse_config(raw, base_dir=apple.directory, env={})
    with pytest.raises(ConfigError, match="devicecheck_private_key_file") as caught:
        Apps(config)
    assert "PRIVATE KEY" not in caught.value.message


# -- hostile receipts ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    receipt=st.one_of(
        st.binary(min_size=1, max_size=300),
        st.tuples(st.integers(0, 2000), st.integers(0, 255)),
    )
)
def test_arbitrary_receipt_bytes_never_break_a_registration(
    risky: Service, apple: Apple, receipt: bytes | tuple[int, int]
) -> None:
    """Random bytes, or a genuine receipt with one byte changed, in an otherwise valid
    attestation: 201 with the receipt reported, or (receipt required) 401 with the exact code."""

    def factory(app_id: str, certificate: bytes, client_hash: bytes) -> bytes:
        if isinstance(receipt, bytes):
            return receipt
        genuine = bytearray(apple.authority.attestation_receipt(app_id, certificate, client_hash))
        position, value = receipt
        genuine[position % len(genuine)] ^= value or 1
        return bytes(genuine)

    lenient = risky.kit.iphone(IOS_APP, receipt_factory=factory)
    _, response = register(risky, lenient)
    assert response.status_code == 201, response.text
    assert response.json()["receipt"]["valid"] in (True, False)
    strict = risky.kit.iphone(IOS_DEV_APP, environment="development", receipt_factory=factory)
    _, response = register(risky, strict)
    if response.status_code != 201:
        assert response.status_code == 401, response.text
        assert error_of(response) == "apple.receipt_invalid"
