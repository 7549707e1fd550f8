"""An Android app configured with both its Play Console keys and a service account: the service
builds both paths, decrypts classic tokens itself and sends standard ones to Google (a fake over
real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appintegrity.service import create_app
from appintegrity.service.server import BackgroundServer
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.fake_google import FakeGoogleServer

from .conftest import ANDROID_APP, CERT_DIGEST, Kit, MutableClock, Service, error_of

# Standard tokens are encrypted under keys only Google holds; the app's own keys are kit.play_keys.
GOOGLE_MANAGED = PlayIntegrityTestKeys.generate()


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogleServer]:
    with FakeGoogleServer() as server:
        server.register(ANDROID_APP, GOOGLE_MANAGED)
        yield server


@pytest.fixture(scope="module")
def both_paths(
    kit: Kit, google: FakeGoogleServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    directory: Path = tmp_path_factory.mktemp("google-routing")
    account = directory / "service-account.json"
    account.write_text(json.dumps(google.make_service_account()))
    raw = kit.raw_config()
    raw["server"]["store"] = f"sqlite:///{directory / 'routing.db'}"
    raw["apps"] = [
        {
            "id": ANDROID_APP,
            "platform": "android",
            "decryption_key": kit.play_keys.decryption_key_b64,
            "verification_key": kit.play_keys.verification_key_b64,
            "service_account_file": str(account),
            "google_api_base_url": google.url,
            "google_token_uri": google.token_uri,
            "certificate_digests": [CERT_DIGEST],
        }
    ]
    config = kit.config(raw)
    clock = MutableClock()
    with (
        BackgroundServer(create_app(config, clock=clock)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield Service(server.url, client, clock, kit, config, config.server.store)


def google_managed_device() -> SoftwareAndroidDevice:
    return SoftwareAndroidDevice(ANDROID_APP, keys=GOOGLE_MANAGED, certificate_digest=CERT_DIGEST)


def test_standard_token_is_decoded_by_google_despite_local_keys(
    both_paths: Service, google: FakeGoogleServer
) -> None:
    before = google.decode_requests
    response = both_paths.post("/v1/assertions", both_paths.android_body(google_managed_device()))
    assert response.status_code == 200, response.text
    assert (response.json()["decision"], response.json()["reasons"]) == ("allow", [])
    assert google.decode_requests == before + 1


def test_classic_token_is_decrypted_locally_without_asking_google(
    both_paths: Service, google: FakeGoogleServer
) -> None:
    before = google.decode_requests
    response = both_paths.post("/v1/assertions", both_paths.android_body(classic=True))
    assert response.status_code == 200, response.text
    assert (response.json()["decision"], response.json()["reasons"]) == ("allow", [])
    assert google.decode_requests == before


def test_token_neither_path_can_read_is_refused_by_google(
    both_paths: Service, google: FakeGoogleServer
) -> None:
    stranger = SoftwareAndroidDevice(ANDROID_APP, certificate_digest=CERT_DIGEST)  # other keys
    before = google.decode_requests
    response = both_paths.post("/v1/assertions", both_paths.android_body(stranger))
    assert (response.status_code, error_of(response)) == (400, "google.api_bad_request")
    assert google.decode_requests == before + 1
