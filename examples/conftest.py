"""Plumbing shared by the examples' tests: the real integrity service and test-kit devices.

The service runs on a free loopback port with a real SQLite file, trusting a throwaway App
Attest CA (for the software iPhone) and test Play Integrity keys (for the software Android
device). Devices get their app tokens from it over HTTP exactly as an app would, through the
test kit's ``IntegrityClient`` (``appintegrity.testing.client``); the example APIs then
verify those tokens against the service's JWKS and consume limited-use tokens through it.
Nothing here imports from ``tests/``: the examples stand alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appintegrity.cli import main as appintegrity_cli
from appintegrity.encoding import b64url_encode
from appintegrity.service import ServiceConfig, create_app, parse_config
from appintegrity.service.server import BackgroundServer
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.client import IntegrityClient
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

IOS_APP = "ABCDE12345.com.example.shop"
ANDROID_APP = "com.example.shop"
# The issuer and audience are names, not the service's address: in production the API
# reaches the service on an internal URL while tokens carry its public name.
ISSUER = "https://integrity.shop.example"
AUDIENCE = "https://api.shop.example"
CERTIFICATE_DIGEST = b64url_encode(hashlib.sha256(b"shop release signing certificate").digest())
# What the devices ask for; the client adds the service's fresh challenge to it.
PURCHASE = {"action": "purchase"}


@dataclass
class RunningService:
    """A running integrity service, and the devices that talk to it."""

    url: str
    store_url: str
    http: httpx.Client
    iphone: SoftwareIPhone
    key_id: str
    android: SoftwareAndroidDevice

    ios_app: str = IOS_APP
    android_app: str = ANDROID_APP

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment an example API reads (``APPINTEGRITY_MODE="monitor"`` etc.)."""
        return {
            "APPINTEGRITY_SERVICE_URL": self.url,
            "APPINTEGRITY_ISSUER": ISSUER,
            "APPINTEGRITY_AUDIENCE": AUDIENCE,
            **overrides,
        }

    @property
    def integrity(self) -> IntegrityClient:
        """The test kit's device client, on this service."""
        return IntegrityClient(self.url, http=self.http)

    def ios_token(self, *, limited_use: bool = False) -> str:
        """challenge → generateAssertion over the request → ``POST /v1/assertions``."""
        return self.integrity.assert_iphone(
            self.iphone, self.key_id, payload=PURCHASE, limited_use=limited_use
        ).token

    def android_token(self, *, limited_use: bool = False, **verdict: object) -> str:
        """challenge → a standard Play Integrity request bound to the payload → assertion.

        ``verdict`` overrides the device's verdict, e.g. ``play_protect="HIGH_RISK"``,
        which the service's default policy answers with decision ``limit``.
        """
        return self.integrity.assert_android(
            self.android, payload=PURCHASE, limited_use=limited_use, **verdict
        ).token

    def debug_token(self, app_id: str = ANDROID_APP) -> str:
        """A debug secret made with the admin CLI, exchanged at ``/v1/debug/exchange``."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = appintegrity_cli(
                [
                    "debug-token",
                    "create",
                    "--store",
                    self.store_url,
                    "--app",
                    app_id,
                    "--name",
                    "examples CI",
                    "--json",
                ]
            )
        assert status == 0, out.getvalue()
        secret = json.loads(out.getvalue())["secret"]
        token = self.integrity.exchange_debug_token(app_id, secret)
        assert token.debug is True
        return token.token


def tampered(token: str) -> str:
    """The token with one payload character changed: same shape, signature no longer valid."""
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    swapped = "A" if payload[middle] != "A" else "B"
    return f"{header}.{payload[:middle]}{swapped}{payload[middle + 1 :]}.{signature}"


def counted(metrics_text: str, **labels: str) -> float:
    """``appintegrity_web_requests_total`` summed over samples matching ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "appintegrity_web_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def _service_config(
    directory: Path, ca: AppAttestCA, play_keys: PlayIntegrityTestKeys
) -> ServiceConfig:
    (directory / "test-root.pem").write_bytes(ca.root_pem)
    raw = {
        "server": {"store": f"sqlite:///{directory / 'service.db'}", "issuer": ISSUER},
        "tokens": {"audience": AUDIENCE, "ttl_seconds": 600},
        "apps": [
            {
                "id": IOS_APP,
                "platform": "ios",
                "environment": "production",
                "trust_roots": ["test-root.pem"],
            },
            {
                "id": ANDROID_APP,
                "platform": "android",
                "decryption_key": play_keys.decryption_key_b64,
                "verification_key": play_keys.verification_key_b64,
                "certificate_digests": [CERTIFICATE_DIGEST],
            },
        ],
    }
    return parse_config(raw, base_dir=directory, env={})


@pytest.fixture(scope="session")
def integrity_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The integrity service on loopback, with an iPhone already registered (attested)."""
    directory = tmp_path_factory.mktemp("integrity-service")
    ca = AppAttestCA.generate()
    play_keys = PlayIntegrityTestKeys.generate()
    config = _service_config(directory, ca, play_keys)
    app = create_app(config)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        # Registration, once per device: challenge → attestKey → POST /v1/registrations.
        iphone = SoftwareIPhone(IOS_APP, ca=ca)
        key_id = IntegrityClient(server.url, http=http).register_iphone(iphone).key_id
        yield RunningService(
            url=server.url,
            store_url=f"sqlite:///{directory / 'service.db'}",
            http=http,
            iphone=iphone,
            key_id=key_id,
            android=SoftwareAndroidDevice(
                ANDROID_APP, keys=play_keys, certificate_digest=CERTIFICATE_DIGEST
            ),
        )
