"""Races, monitor mode, rate limits and store outages, each against its own running service."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appintegrity.encoding import b64_encode
from appintegrity.errors import StoreUnavailableError
from appintegrity.store import open_store
from appintegrity.store.base import Store

from .conftest import Kit, Service, error_of, start_service


async def _post_all(url: str, path: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = asyncio.Event()

        async def one(body: dict[str, object]) -> httpx.Response:
            await start.wait()
            return await client.post(path, json=body)

        tasks = [asyncio.create_task(one(body)) for body in bodies]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def test_fifty_copies_of_one_assertion_succeed_exactly_once(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    responses = asyncio.run(_post_all(service.url, "/v1/assertions", [body] * 50))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    assert statuses[409] == 49, statuses
    assert {error_of(r) for r in responses if r.status_code == 409} <= {
        "challenge.consumed",
        "apple.counter_invalid",
    }


def test_concurrent_assertions_with_one_counter_advance_it_exactly_once(
    service: Service,
) -> None:
    """Twenty assertions share counter 1, each over its own challenge: they all pass the
    signature check against counter 0, and the store's atomic advance lets one through."""
    phone, key_id = service.register()
    bodies = [service.assertion_body(phone, key_id)]
    bodies += [service.assertion_body(phone, key_id, defect="replayed_counter") for _ in range(19)]
    responses = asyncio.run(_post_all(service.url, "/v1/assertions", bodies))
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: 19})
    assert {error_of(r) for r in responses if r.status_code == 409} == {"apple.counter_invalid"}
    assert [r.json()["counter"] for r in responses if r.status_code == 200] == [1]


def test_fifty_registrations_with_one_challenge_succeed_exactly_once(service: Service) -> None:
    challenge = service.challenge("attestation")
    bodies: list[dict[str, object]] = []
    for _ in range(50):
        phone = service.kit.iphone()
        key_id = phone.generate_key()
        bodies.append(
            {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "challenge": challenge,
                "token": b64_encode(phone.attest_key(key_id, challenge)),
            }
        )
    responses = asyncio.run(_post_all(service.url, "/v1/registrations", bodies))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: 1, 409: 49}), statuses
    assert {error_of(r) for r in responses if r.status_code == 409} == {"challenge.consumed"}


def test_fifty_copies_of_one_android_token_succeed_exactly_once(service: Service) -> None:
    body = service.android_body()
    responses = asyncio.run(_post_all(service.url, "/v1/assertions", [body] * 50))
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: 49})


def test_fifty_consumptions_of_one_limited_use_token_succeed_exactly_once(
    service: Service,
) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id, limitedUse=True)
    token = service.post("/v1/assertions", body).json()["appToken"]
    responses = asyncio.run(
        _post_all(service.url, "/v1/tokens/verify", [{"token": token, "consume": True}] * 50)
    )
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: 49})


# -- monitor mode --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from start_service(kit, tmp_path_factory.mktemp("monitor"), mode="monitor")


def test_monitor_mode_answers_a_blocked_device_with_a_block_token(monitor: Service) -> None:
    response = monitor.post("/v1/assertions", monitor.android_body(device_labels=None))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "block"
    assert body["reasons"] == ["google.device_integrity_insufficient"]
    verified = monitor.post("/v1/tokens/verify", {"token": body["appToken"]}).json()
    assert verified["claims"]["decision"] == "block"
    metrics = monitor.client.get("/metrics").text
    assert 'outcome="block_monitored"' in metrics


def test_monitor_mode_still_refuses_a_tampered_payload(monitor: Service) -> None:
    body = monitor.android_body()
    body["payload"] = body["payload"].replace("redeem", "withdraw")
    response = monitor.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (401, "google.request_hash_mismatch")


# -- rate limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("limited")
    raw = kit.raw_config()
    raw["server"]["store"] = f"sqlite:///{directory / 'service.db'}"
    raw["limits"] = {
        "challenges_per_minute_per_ip": 5,
        "verifications_per_minute_per_ip": 100,
        "verifications_per_minute_per_key": 2,
    }
    from appintegrity.service import create_app
    from appintegrity.service.server import BackgroundServer

    from .conftest import MutableClock

    config = kit.config(raw)
    clock = MutableClock()
    with (
        BackgroundServer(create_app(config, clock=clock)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        yield Service(server.url, client, clock, kit, config, config.server.store)


def test_challenges_over_the_limit_get_429_with_retry_after(limited: Service) -> None:
    limited.clock.fresh_window()
    try:
        statuses = [limited.post("/v1/challenges").status_code for _ in range(5)]
        assert statuses == [201] * 5
        refused = limited.post("/v1/challenges")
        assert (refused.status_code, error_of(refused)) == (429, "rate.limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        limited.clock.advance(seconds=61)
        assert limited.post("/v1/challenges").status_code == 201
    finally:
        limited.clock.reset()


def test_verifications_per_key_over_the_limit_get_429(limited: Service) -> None:
    limited.clock.fresh_window()
    try:
        phone = limited.kit.iphone()
        key_id = phone.generate_key()
        challenges = [limited.challenge() for _ in range(3)]
        bodies = [limited.registration_body(phone, key_id, challenge=c) for c in challenges]
        first = limited.post("/v1/registrations", bodies[0])
        assert first.status_code == 201, first.text
        second = limited.post("/v1/registrations", bodies[1])
        assert error_of(second) == "key.exists"
        third = limited.post("/v1/registrations", bodies[2])
        assert (third.status_code, error_of(third)) == (429, "rate.limited")
        assert "retry-after" in third.headers
    finally:
        limited.clock.reset()


def test_forged_assertions_do_not_spend_a_devices_per_key_allowance(limited: Service) -> None:
    limited.clock.fresh_window()
    try:
        phone, key_id = limited.register()  # one verified request for this key
        for _ in range(2):  # someone who knows the key id, without the device's key
            forged = limited.post(
                "/v1/assertions", limited.assertion_body(phone, key_id, defect="bad_signature")
            )
            assert (forged.status_code, error_of(forged)) == (401, "apple.signature_invalid")
        genuine = limited.post("/v1/assertions", limited.assertion_body(phone, key_id))
        assert genuine.status_code == 200, genuine.text  # the second verified request: allowed
        over = limited.post("/v1/assertions", limited.assertion_body(phone, key_id))
        assert (over.status_code, error_of(over)) == (429, "rate.limited")
    finally:
        limited.clock.reset()


# -- store outage --------------------------------------------------------------------------------


class FlakyStore:
    """The real SQLite store behind a switch that simulates its backend going away."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> object:
        target = getattr(self.inner, name)
        if name in ("migrate", "close") or not callable(target):
            return target

        async def call(*args: object, **kwargs: object) -> object:
            if self.down:
                raise StoreUnavailableError("simulated outage: the database is unreachable")
            return await target(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def flaky(
    kit: Kit, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, FlakyStore]]:
    directory: Path = tmp_path_factory.mktemp("flaky")
    store = FlakyStore(open_store(f"sqlite:///{directory / 'flaky.db'}"))
    for service in start_service(kit, directory, store=store):  # type: ignore[arg-type]
        yield service, store


def test_store_outage_fails_closed_with_503_and_recovers(flaky: tuple[Service, FlakyStore]) -> None:
    service, store = flaky
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    store.down = True
    try:
        for response in (
            service.post("/v1/assertions", body),
            service.post("/v1/challenges"),
            service.client.get("/healthz"),
        ):
            assert (response.status_code, error_of(response)) == (503, "store.unavailable")
    finally:
        store.down = False
    assert service.client.get("/healthz").status_code == 200
    # The refused assertion's challenge was never consumed: nothing was accepted.
    assert service.post("/v1/assertions", body).status_code == 200
