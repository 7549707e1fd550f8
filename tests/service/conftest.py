"""The service over real HTTP on loopback, with a real SQLite file and test-kit devices."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from appintegrity.encoding import b64url_encode
from appintegrity.service import create_app, parse_config
from appintegrity.service.config import ServiceConfig
from appintegrity.service.server import BackgroundServer
from appintegrity.store import open_store
from appintegrity.store.base import Store
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.client import IntegrityClient
from appintegrity.testing.fake_google import FakeGoogleServer
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

IOS_APP = "ABCDE12345.com.example.app"
IOS_DEV_APP = "ABCDE12345.com.example.dev"
ANDROID_APP = "com.example.app"
ADMIN_KEY = "test-admin-key-0123456789"
CERT_DIGEST = b64url_encode(hashlib.sha256(b"test signing certificate").digest())
# What the iOS assertion bodies sign by default (the client adds the challenge member).
REDEEM = {"action": "redeem", "credits": 50}


class MutableClock:
    """The service's clock: real time plus an offset a test may move (and must reset)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._last_window = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)

    def reset(self) -> None:
        self.offset = timedelta()

    def fresh_window(self, seconds: int = 60) -> None:
        """Move to one second into a fixed rate-limit window that no earlier test has used, so
        a burst cannot straddle a window edge (which would reset its count half-way)."""
        with self._lock:
            now = datetime.now(UTC).timestamp()
            start = (now + self.offset.total_seconds()) // seconds * seconds + seconds
            start = max(start, self._last_window + seconds)
            self._last_window = start
            self.offset = timedelta(seconds=start + 1 - now)


@dataclass
class Kit:
    """What every end-to-end test needs: a CA, Play keys, and configs that trust them."""

    directory: Path
    ca: AppAttestCA
    play_keys: PlayIntegrityTestKeys

    def raw_config(self, **server: object) -> dict[str, Any]:
        (self.directory / "test-root.pem").write_bytes(self.ca.root_pem)
        return {
            "server": {
                "store": "sqlite:///service.db",
                "issuer": "https://integrity.test",
                "admin_key": ADMIN_KEY,
                **server,
            },
            "tokens": {
                "ttl_seconds": 600,
                "key_refresh_seconds": 0.2,
                "key_publish_seconds": 0.4,
            },
            "apps": [
                {
                    "id": IOS_APP,
                    "platform": "ios",
                    "environment": "production",
                    "trust_roots": ["test-root.pem"],
                },
                {
                    "id": IOS_DEV_APP,
                    "platform": "ios",
                    "environment": "development",
                    "trust_roots": ["test-root.pem"],
                    "allow_debug_tokens": False,
                },
                {
                    "id": ANDROID_APP,
                    "platform": "android",
                    "decryption_key": self.play_keys.decryption_key_b64,
                    "verification_key": self.play_keys.verification_key_b64,
                    "certificate_digests": [CERT_DIGEST],
                },
            ],
        }

    def config(self, raw: Mapping[str, Any] | None = None, **server: object) -> ServiceConfig:
        return parse_config(raw or self.raw_config(**server), base_dir=self.directory, env={})

    def iphone(self, app_id: str = IOS_APP, **kwargs: Any) -> SoftwareIPhone:
        return SoftwareIPhone(app_id, ca=self.ca, **kwargs)

    def android(self, **kwargs: Any) -> SoftwareAndroidDevice:
        return SoftwareAndroidDevice(
            ANDROID_APP, keys=self.play_keys, certificate_digest=CERT_DIGEST, **kwargs
        )


@dataclass
class Service:
    """A running service, a raw HTTP client for it, and the device client of the test kit."""

    url: str
    client: httpx.Client
    clock: MutableClock
    kit: Kit
    config: ServiceConfig
    store_url: str
    registered: dict[str, SoftwareIPhone] = field(default_factory=dict)
    integrity: IntegrityClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.integrity = IntegrityClient(self.url, http=self.client)

    # -- protocol helpers: bodies come from the test kit's client, tests send them raw ---------
    def post(self, path: str, body: object = None, **kwargs: Any) -> httpx.Response:
        if body is None:
            return self.client.post(path, **kwargs)
        return self.client.post(path, json=body, **kwargs)

    def challenge(self, purpose: str | None = None, key_id: str | None = None) -> str:
        return self.integrity.challenge(purpose, key_id)

    def registration_body(
        self, phone: SoftwareIPhone, key_id: str | None = None, **attest: Any
    ) -> dict[str, str]:
        return self.integrity.registration_request(phone, key_id, **attest)

    def register(self, phone: SoftwareIPhone | None = None) -> tuple[SoftwareIPhone, str]:
        phone = phone or self.kit.iphone()
        return phone, self.integrity.register_iphone(phone).key_id

    def assertion_body(
        self,
        phone: SoftwareIPhone,
        key_id: str,
        *,
        payload: str | None = None,
        challenge: str | None = None,
        defect: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = self.integrity.ios_assertion_request(
            phone,
            key_id,
            payload=REDEEM if payload is None else payload,
            challenge=challenge,
            defect=defect,
        )
        return {**body, **extra}

    def android_body(
        self,
        device: SoftwareAndroidDevice | None = None,
        *,
        classic: bool = False,
        payload: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        return self.integrity.android_assertion_request(
            device or self.kit.android(),
            payload={"action": "redeem"} if payload is None else payload,
            classic=classic,
            **overrides,
        )

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    code: str = body["error"]["code"]
    return code


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(
        directory=tmp_path_factory.mktemp("service"),
        ca=AppAttestCA.generate(),
        play_keys=PlayIntegrityTestKeys.generate(),
    )


def start_service(
    kit: Kit,
    directory: Path,
    *,
    store: Store | None = None,
    **server: object,
) -> Iterator[Service]:
    raw = kit.raw_config(**server)
    raw["server"].setdefault("store", "sqlite:///service.db")
    raw["server"]["store"] = f"sqlite:///{directory / 'service.db'}"
    with running(kit, kit.config(raw), store=store) as service:
        yield service


@contextmanager
def running(kit: Kit, config: ServiceConfig, *, store: Store | None = None) -> Iterator[Service]:
    """``config`` served over real HTTP on loopback, with a clock the test may move."""
    clock = MutableClock()
    app = create_app(config, store=store, clock=clock)
    with (
        BackgroundServer(app) as server_thread,
        httpx.Client(base_url=server_thread.url, timeout=30) as client,
    ):
        yield Service(
            url=server_thread.url,
            client=client,
            clock=clock,
            kit=kit,
            config=config,
            store_url=config.server.store,
        )


def google_api_app(google: FakeGoogleServer, directory: Path, **extra: Any) -> dict[str, Any]:
    """The Android app's config entry sending its tokens to ``google``'s decode API, with a
    service account file written in ``directory``; ``extra`` adds or overrides members."""
    account = directory / "service-account.json"
    account.write_text(json.dumps(google.make_service_account()))
    return {
        "id": ANDROID_APP,
        "platform": "android",
        "service_account_file": str(account),
        "google_api_base_url": google.url,
        "google_token_uri": google.token_uri,
        "certificate_digests": [CERT_DIGEST],
        **extra,
    }


@pytest.fixture(scope="module")
def service(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from start_service(kit, tmp_path_factory.mktemp("db"))


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "service" in request.fixturenames:
        request.getfixturevalue("service").clock.reset()


__all__ = ["open_store"]
