"""An Android app configured with both its Play Console keys and a service account: the service
builds both paths, decrypts classic tokens itself and sends standard ones to Google (a fake over
real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.fake_google import FakeGoogleServer

from .conftest import ANDROID_APP, CERT_DIGEST, Kit, Service, error_of, google_api_app, running

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
    raw = kit.raw_config()
    raw["server"]["store"] = f"sqlite:///{directory / 'routing.db'}"
    raw["apps"] = [
        google_api_app(
            google,
            directory,
            decryption_key=kit.play_keys.decryption_key_b64,
            verification_key=kit.play_keys.verification_key_b64,
        )
    ]
    with running(kit, kit.config(raw)) as service:
        yield service


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
