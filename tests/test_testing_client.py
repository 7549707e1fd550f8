"""The test kit's IntegrityClient against a real service on loopback (SQLite, test CAs)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from appintegrity.encoding import b64url_encode
from appintegrity.service import create_app, parse_config
from appintegrity.service.server import BackgroundServer
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.client import (
    ASSERTIONS,
    IntegrityClient,
    ServiceRefusal,
    UnexpectedResponse,
)
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

IOS_APP = "ABCDE12345.com.example.client"
ANDROID_APP = "com.example.client"
ADMIN_KEY = "client-test-admin-key-0123"
DIGEST = b64url_encode(hashlib.sha256(b"client test signing certificate").digest())


@dataclass
class Running:
    url: str
    ca: AppAttestCA
    play_keys: PlayIntegrityTestKeys

    def iphone(self) -> SoftwareIPhone:
        return SoftwareIPhone(IOS_APP, ca=self.ca)

    def android(self) -> SoftwareAndroidDevice:
        return SoftwareAndroidDevice(ANDROID_APP, keys=self.play_keys, certificate_digest=DIGEST)


def start(directory: Path, **limits: int) -> Iterator[Running]:
    ca = AppAttestCA.generate()
    play_keys = PlayIntegrityTestKeys.generate()
    (directory / "root.pem").write_bytes(ca.root_pem)
    raw: dict[str, object] = {
        "server": {
            "store": f"sqlite:///{directory / 'service.db'}",
            "issuer": "https://integrity.client.test",
            "admin_key": ADMIN_KEY,
        },
        "apps": [
            {
                "id": IOS_APP,
                "platform": "ios",
                "environment": "production",
                "trust_roots": ["root.pem"],
            },
            {
                "id": ANDROID_APP,
                "platform": "android",
                "decryption_key": play_keys.decryption_key_b64,
                "verification_key": play_keys.verification_key_b64,
                "certificate_digests": [DIGEST],
            },
        ],
    }
    if limits:
        raw["limits"] = limits
    config = parse_config(raw, base_dir=directory, env={})
    with BackgroundServer(create_app(config)) as server:
        yield Running(server.url, ca, play_keys)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from start(tmp_path_factory.mktemp("client-service"))


@pytest.fixture
def client(running: Running) -> Iterator[IntegrityClient]:
    with IntegrityClient(running.url + "/") as integrity:
        yield integrity


# -- iOS -----------------------------------------------------------------------------------------


def test_register_iphone_returns_the_key_and_an_app_token_the_service_accepts(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    registration = client.register_iphone(phone)
    assert phone.counter(registration.key_id) == 0  # the phone made that key
    assert registration.environment == "production"
    claims = client.verify_token(registration.app_token)
    assert (claims["sub"], claims["platform"], claims["did"]) == (
        IOS_APP,
        "ios",
        registration.key_id,
    )


def test_register_iphone_with_a_given_key_registers_that_key(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    key_id = phone.generate_key()
    assert client.register_iphone(phone, key_id=key_id).key_id == key_id
    with pytest.raises(ServiceRefusal) as refused:
        client.register_iphone(phone, key_id=key_id)
    assert (refused.value.status, refused.value.code) == (409, "key.exists")


def test_assert_iphone_signs_the_payload_it_sends_with_a_fresh_challenge(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    key_id = client.register_iphone(phone).key_id
    first = client.assert_iphone(phone, key_id, payload={"action": "buy", "sku": "gold"})
    second = client.assert_iphone(phone, key_id, payload={"action": "buy", "sku": "gold"})
    assert (first.decision, first.counter, second.counter) == ("allow", 1, 2)
    assert first.payload is not None and second.payload is not None
    sent = json.loads(first.payload)
    assert (sent["action"], sent["sku"]) == ("buy", "gold")
    assert sent["challenge"] != json.loads(second.payload)["challenge"]
    assert "limited_use" not in client.verify_token(first.token)


def test_a_replayed_assertion_is_a_refusal_with_the_exact_code(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    key_id = client.register_iphone(phone).key_id
    body = client.ios_assertion_request(phone, key_id, payload={"action": "buy"})
    assert isinstance(client.post_json(ASSERTIONS, body)["appToken"], str)
    with pytest.raises(ServiceRefusal) as refused:
        client.post_json(ASSERTIONS, body)
    assert (refused.value.status, refused.value.code) == (409, "challenge.consumed")
    assert refused.value.body["error"] == {
        "code": "challenge.consumed",
        "message": refused.value.message,
    }
    assert refused.value.reasons == ()


def test_a_tampered_payload_is_apple_signature_invalid(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    key_id = client.register_iphone(phone).key_id
    body = client.ios_assertion_request(phone, key_id, payload={"credits": 50})
    body["payload"] = str(body["payload"]).replace('"credits": 50', '"credits": 5000')
    with pytest.raises(ServiceRefusal) as refused:
        client.post_json(ASSERTIONS, body)
    assert (refused.value.status, refused.value.code) == (401, "apple.signature_invalid")


def test_assertion_with_an_unregistered_key_is_key_unknown(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    with pytest.raises(ServiceRefusal) as refused:
        client.assert_iphone(phone, phone.generate_key())
    assert (refused.value.status, refused.value.code) == (404, "key.unknown")


def test_limited_use_token_is_consumed_once(running: Running, client: IntegrityClient) -> None:
    phone = running.iphone()
    key_id = client.register_iphone(phone).key_id
    token = client.assert_iphone(phone, key_id, limited_use=True)
    assert client.verify_token(token.token, consume=True)["limited_use"] is True
    with pytest.raises(ServiceRefusal) as refused:
        client.verify_token(token, consume=True)
    assert (refused.value.status, refused.value.code) == (409, "token.consumed")


def test_a_forged_token_is_token_invalid(running: Running, client: IntegrityClient) -> None:
    with pytest.raises(ServiceRefusal) as refused:
        client.verify_token("x.y.z")
    assert (refused.value.status, refused.value.code) == (401, "token.invalid")


# -- Android -------------------------------------------------------------------------------------


def test_assert_android_is_allowed_and_bound_to_the_payload(
    running: Running, client: IntegrityClient
) -> None:
    token = client.assert_android(running.android(), payload={"action": "transfer"})
    assert (token.decision, token.reasons, token.counter) == ("allow", (), None)
    assert token.payload is not None and json.loads(token.payload)["action"] == "transfer"
    claims = client.verify_token(token)
    assert (claims["sub"], claims["platform"]) == (ANDROID_APP, "android")


def test_verdict_overrides_reach_the_token(running: Running, client: IntegrityClient) -> None:
    limited = client.assert_android(running.android(), play_protect="HIGH_RISK")
    assert (limited.decision, limited.reasons) == ("limit", ("google.play_protect_risk",))
    with pytest.raises(ServiceRefusal) as refused:
        client.assert_android(running.android(), device_labels=None)
    assert (refused.value.status, refused.value.code) == (403, "decision.blocked")
    assert refused.value.reasons == ("google.device_integrity_insufficient",)


def test_classic_nonce_requests_and_app_id_are_sent(
    running: Running, client: IntegrityClient
) -> None:
    body = client.android_assertion_request(running.android(), classic=True, app_id=ANDROID_APP)
    assert body["appId"] == ANDROID_APP
    assert isinstance(client.post_json(ASSERTIONS, body)["appToken"], str)
    other = client.android_assertion_request(running.android(), app_id="com.example.other")
    with pytest.raises(ServiceRefusal) as refused:
        client.post_json(ASSERTIONS, other)
    assert (refused.value.status, refused.value.code) == (404, "app.unknown")


# -- debug tokens --------------------------------------------------------------------------------


def test_exchange_debug_token_gives_a_debug_app_token(
    running: Running, client: IntegrityClient
) -> None:
    created = httpx.post(
        f"{running.url}/v1/admin/debug-tokens",
        json={"appId": IOS_APP, "name": "CI"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    token = client.exchange_debug_token(IOS_APP, created.json()["secret"])
    assert (token.debug, token.decision) == (True, "allow")
    assert client.verify_token(token)["debug"] is True
    with pytest.raises(ServiceRefusal) as refused:
        client.exchange_debug_token(IOS_APP, "not-the-secret")
    assert (refused.value.status, refused.value.code) == (401, "token.invalid")


# -- transport -----------------------------------------------------------------------------------


def test_challenge_bound_to_a_key_only_serves_that_key(
    running: Running, client: IntegrityClient
) -> None:
    phone = running.iphone()
    key_id = client.register_iphone(phone).key_id
    other = client.register_iphone(running.iphone()).key_id
    bound = client.challenge("assertion", key_id=other)
    body = client.ios_assertion_request(phone, key_id, payload={}, challenge=bound)
    assert json.loads(str(body["payload"])) == {"challenge": bound}
    with pytest.raises(ServiceRefusal) as refused:
        client.post_json(ASSERTIONS, body)
    assert (refused.value.status, refused.value.code) == (400, "challenge.mismatch")


def test_rate_limit_refusal_carries_retry_after(tmp_path: Path) -> None:
    for running in start(tmp_path, challenges_per_minute_per_ip=1):
        with IntegrityClient(running.url) as client:
            # Limits count in fixed 60-second windows; three quick calls cross at most one
            # window edge, so at least two of them share a window and the later one is refused.
            with pytest.raises(ServiceRefusal) as refused:
                for _ in range(3):
                    client.challenge()
    assert (refused.value.status, refused.value.code) == (429, "rate.limited")
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60


def test_a_server_that_is_not_the_service_is_unexpected_response() -> None:
    class Html(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>bad gateway</html>")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with (
            IntegrityClient(f"http://127.0.0.1:{server.server_address[1]}") as client,
            pytest.raises(UnexpectedResponse) as unexpected,
        ):
            client.challenge()
    finally:
        server.shutdown()
        server.server_close()
    assert (unexpected.value.status, unexpected.value.code) == (502, "client.unexpected_response")


def test_a_given_http_client_is_used_and_left_open(running: Running) -> None:
    with httpx.Client(timeout=5) as http:
        with IntegrityClient(running.url, http=http) as client:
            assert client.challenge("attestation")
        assert not http.is_closed
        own = IntegrityClient(running.url)
        own.close()
        assert own.http.is_closed
