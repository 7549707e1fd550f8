"""Android through Google's decode API (a fake over real HTTP), a token binding UTF-8 cannot
spell, and signing-key rotation made elsewhere (the CLI on the shared store) reaching a running
instance."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appintegrity.testing.fake_google import FakeGoogleServer

from .conftest import ANDROID_APP, Kit, Service, error_of, google_api_app, running


@pytest.fixture(scope="module")
def google_backed(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory: Path = tmp_path_factory.mktemp("google")
    with FakeGoogleServer() as google:
        google.register(ANDROID_APP, kit.play_keys)
        raw = kit.raw_config()
        raw["server"]["store"] = f"sqlite:///{directory / 'google.db'}"
        raw["apps"] = [google_api_app(google, directory)]
        with running(kit, kit.config(raw)) as service:
            service.google = google  # type: ignore[attr-defined]
            yield service


def test_standard_request_decoded_by_google_is_allowed(google_backed: Service) -> None:
    response = google_backed.post("/v1/assertions", google_backed.android_body())
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "allow"


def test_tampered_payload_is_refused_on_the_google_path_too(google_backed: Service) -> None:
    body = google_backed.android_body()
    body["payload"] = body["payload"].replace("redeem", "refund")
    response = google_backed.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (401, "google.request_hash_mismatch")


def test_google_refusing_the_service_is_502_without_googles_words(google_backed: Service) -> None:
    google: FakeGoogleServer = google_backed.google  # type: ignore[attr-defined]
    google.fail_next(403)  # not retried: the service account may not decode for this app
    response = google_backed.post("/v1/assertions", google_backed.android_body())
    assert (response.status_code, error_of(response)) == (502, "google.api_permission_denied")
    message = response.json()["error"]["message"]
    assert message == "the service may not decode this app's tokens; try later"


def test_google_unreachable_after_retries_is_503(google_backed: Service) -> None:
    google: FakeGoogleServer = google_backed.google  # type: ignore[attr-defined]
    google.fail_next(503, count=4)  # the first try and the decoder's three retries
    response = google_backed.post("/v1/assertions", google_backed.android_body())
    assert (response.status_code, error_of(response)) == (503, "google.api_unavailable")
    assert "decodeIntegrityToken" not in response.json()["error"]["message"]


def test_google_quota_exhaustion_is_429(google_backed: Service) -> None:
    google: FakeGoogleServer = google_backed.google  # type: ignore[attr-defined]
    google.fail_next(429, count=10)  # more than the decoder's retries; the last test here
    response = google_backed.post("/v1/assertions", google_backed.android_body())
    assert (response.status_code, error_of(response)) == (429, "google.api_quota_exceeded")


@pytest.mark.parametrize("classic", [False, True])
def test_lone_surrogate_in_the_tokens_binding_is_401_not_500(
    service: Service, classic: bool
) -> None:
    body = service.android_body(classic=classic)
    # A lone UTF-16 surrogate, as a JSON encoder escapes it ("\ud800"): not encodable as UTF-8.
    bad = "\ud800" + "A" * 42
    binding = {"nonce": bad} if classic else {"request_hash": bad}
    body["token"] = service.kit.android().request_integrity_token(**binding)
    response = service.post("/v1/assertions", body)
    expected = "google.nonce_mismatch" if classic else "google.request_hash_mismatch"
    assert (response.status_code, error_of(response)) == (401, expected)


def test_rotation_by_the_cli_on_the_shared_store_reaches_the_running_service(
    service: Service,
) -> None:
    before = {k["kid"] for k in service.client.get("/.well-known/jwks.json").json()["keys"]}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "appintegrity",
            "signing-key",
            "rotate",
            "--store",
            service.store_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while True:
        kids = {k["kid"] for k in service.client.get("/.well-known/jwks.json").json()["keys"]}
        if kids - before:
            break
        assert time.monotonic() < deadline, "the rotation never reached the service"
        time.sleep(0.1)
    (new_kid,) = kids - before
    assert before <= kids  # the old keys keep verifying
    service.clock.advance(seconds=1)  # past the publish delay (two 0.2 s refreshes)
    token = service.post("/v1/assertions", service.android_body()).json()["appToken"]
    claims = service.post("/v1/tokens/verify", {"token": token}).json()["claims"]
    assert claims["sub"] == ANDROID_APP
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==").decode())
    assert header["kid"] == new_kid


def test_retired_signing_keys_leave_the_jwks_once_their_tokens_have_expired(
    service: Service,
) -> None:
    rotated = service.post("/v1/admin/signing-keys/rotate", headers=service.admin()).json()
    active = rotated["next"]  # published now, signing after the publish delay
    retired = {k["kid"] for k in rotated["keys"] if k["retiredAt"] is not None}
    assert retired and active not in retired
    published = {k["kid"] for k in service.client.get("/.well-known/jwks.json").json()["keys"]}
    assert retired <= published
    service.clock.advance(seconds=600 + 30 + 0.4 + 5)  # longest TTL + leeway + publish delay
    deadline = time.monotonic() + 10
    while True:
        published = {k["kid"] for k in service.client.get("/.well-known/jwks.json").json()["keys"]}
        if not published & retired:
            break
        assert time.monotonic() < deadline, "retired keys were never dropped"
        time.sleep(0.1)
    assert published == {active}
