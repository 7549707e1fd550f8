"""The service over real HTTP on loopback, with a real SQLite file and test-kit devices."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from appintegrity.encoding import b64_encode, b64url_encode
from appintegrity.google.nonce import request_hash
from appintegrity.service import create_app, parse_config
from appintegrity.service.config import ServiceConfig
from appintegrity.service.server import BackgroundServer
from appintegrity.store import open_store
from appintegrity.store.base import Store
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

IOS_APP = "ABCDE12345.com.example.app"
IOS_DEV_APP = "ABCDE12345.com.example.dev"
ANDROID_APP = "com.example.app"
ADMIN_KEY = "test-admin-key-0123456789"
CERT_DIGEST = b64url_encode(hashlib.sha256(b"test signing certificate").digest())


class MutableClock:
    """The service's clock: real time plus an offset a test may move (and must reset)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)

    def reset(self) -> None:
        self.offset = timedelta()


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
            "tokens": {"ttl_seconds": 600, "key_refresh_seconds": 0.2},
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
    """A running service and a client for it."""

    url: str
    client: httpx.Client
    clock: MutableClock
    kit: Kit
    config: ServiceConfig
    store_url: str
    registered: dict[str, SoftwareIPhone] = field(default_factory=dict)

    # -- protocol helpers ---------------------------------------------------------------------
    def post(self, path: str, body: object = None, **kwargs: Any) -> httpx.Response:
        if body is None:
            return self.client.post(path, **kwargs)
        return self.client.post(path, json=body, **kwargs)

    def challenge(self, purpose: str | None = None, key_id: str | None = None) -> str:
        body: dict[str, str] = {}
        if purpose:
            body["purpose"] = purpose
        if key_id:
            body["keyId"] = key_id
        response = self.post("/v1/challenges", body)
        assert response.status_code == 201, response.text
        value: str = response.json()["challenge"]
        return value

    def registration_body(
        self, phone: SoftwareIPhone, key_id: str | None = None, **attest: Any
    ) -> dict[str, str]:
        key_id = key_id or phone.generate_key()
        challenge = attest.pop("challenge", None) or self.challenge("attestation")
        token = b64_encode(phone.attest_key(key_id, challenge, **attest))
        return {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": key_id,
            "challenge": challenge,
            "token": token,
        }

    def register(self, phone: SoftwareIPhone | None = None) -> tuple[SoftwareIPhone, str]:
        phone = phone or self.kit.iphone()
        body = self.registration_body(phone)
        response = self.post("/v1/registrations", body)
        assert response.status_code == 201, response.text
        return phone, body["keyId"]

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
        if payload is None:
            challenge = challenge or self.challenge("assertion")
            payload = json.dumps({"action": "redeem", "credits": 50, "challenge": challenge})
        token = b64_encode(phone.generate_assertion(key_id, payload, defect=defect))
        return {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": key_id,
            "payload": payload,
            "token": token,
            **extra,
        }

    def android_body(
        self,
        device: SoftwareAndroidDevice | None = None,
        *,
        classic: bool = False,
        payload: str | None = None,
        hashed: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        device = device or self.kit.android()
        if payload is None:
            payload = json.dumps({"action": "redeem", "challenge": self.challenge("assertion")})
        binding = hashed or request_hash(payload)
        if classic:
            token = device.request_integrity_token(nonce=binding, **overrides)
        else:
            token = device.request_integrity_token(request_hash=binding, **overrides)
        return {
            "platform": "android",
            "format": "google-play-integrity",
            "payload": payload,
            "token": token,
        }

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
    config = kit.config(raw)
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


@pytest.fixture(scope="module")
def service(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from start_service(kit, tmp_path_factory.mktemp("db"))


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "service" in request.fixturenames:
        request.getfixturevalue("service").clock.reset()


__all__ = ["open_store"]
