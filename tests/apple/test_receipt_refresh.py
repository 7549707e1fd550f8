"""Receipt refresh against the fake Apple data server, over real HTTP on loopback."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.receipt import ReceiptType, assess_risk, verify_receipt
from appintegrity.apple.receipt_refresh import (
    DEVELOPMENT_BASE_URL,
    PRODUCTION_BASE_URL,
    ReceiptRefreshClient,
)
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.fake_apple import FakeAppleDataServer, ScriptedResponse
from appintegrity.testing.receipts import ReceiptAuthority

from .conftest import attested_certificate_der

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TEAM_ID = "ABCDE12345"
KEY_ID = "KEY1234567"
APP_ID = f"{TEAM_ID}.com.example.app"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def authority() -> ReceiptAuthority:
    return ReceiptAuthority(clock=lambda: NOW)


@pytest.fixture(scope="module")
def devicecheck_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def devicecheck_pem(devicecheck_key: ec.EllipticCurvePrivateKey) -> bytes:
    return devicecheck_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def attest_receipt(authority: ReceiptAuthority, device_key: ec.EllipticCurvePrivateKey) -> bytes:
    return authority.attestation_receipt(
        APP_ID, attested_certificate_der(device_key, NOW), bytes(32)
    )


@pytest.fixture
def apple(
    authority: ReceiptAuthority, devicecheck_key: ec.EllipticCurvePrivateKey
) -> Iterator[FakeAppleDataServer]:
    with FakeAppleDataServer(
        authority=authority,
        public_key=devicecheck_key.public_key(),
        team_id=TEAM_ID,
        key_id=KEY_ID,
        clock=lambda: NOW,
    ) as server:
        yield server


def _client(apple: FakeAppleDataServer, pem: bytes, **overrides: object) -> ReceiptRefreshClient:
    arguments: dict[str, object] = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key_pem": pem,
        "base_url": apple.url,
        "timeout": 2.0,
        "retries": 2,
        "backoff": 0.01,
    }
    arguments.update(overrides)
    return ReceiptRefreshClient(**arguments)  # type: ignore[arg-type]


async def _refresh_error(client: ReceiptRefreshClient, receipt: bytes) -> AppleVerificationError:
    async with client:
        with pytest.raises(AppleVerificationError) as caught:
            await client.refresh(receipt, now=NOW)
    return caught.value


async def test_refresh_returns_a_newer_receipt_with_a_risk_metric(
    apple: FakeAppleDataServer,
    authority: ReceiptAuthority,
    devicecheck_pem: bytes,
    attest_receipt: bytes,
    device_key: ec.EllipticCurvePrivateKey,
) -> None:
    async with _client(apple, devicecheck_pem) as client:
        result = await client.refresh(attest_receipt, now=NOW)
    assert result.status == "updated"
    assert result.receipt is not None
    fresh = verify_receipt(
        result.receipt,
        now=NOW,
        app_id=APP_ID,
        public_key=device_key.public_key(),
        trust_roots=[authority.root_certificate],
        max_age=timedelta(minutes=5),
    )
    assert fresh.type is ReceiptType.RECEIPT
    assert fresh.risk_metric == 1
    assert fresh.not_before == NOW + timedelta(days=1)
    original = verify_receipt(attest_receipt, now=NOW, trust_roots=[authority.root_certificate])
    assert fresh.token == original.token  # Apple keeps the token across refreshes
    assert fresh.attested_certificate == original.attested_certificate
    assert assess_risk(fresh, threshold=0).over_threshold is True

    (request,) = apple.requests
    assert request.method == "POST"
    assert request.path == "/v1/attestationData"
    assert base64.b64decode(request.body) == attest_receipt


async def test_authorization_is_an_es256_jwt_with_kid_iss_and_iat(
    apple: FakeAppleDataServer,
    devicecheck_pem: bytes,
    devicecheck_key: ec.EllipticCurvePrivateKey,
    attest_receipt: bytes,
) -> None:
    async with _client(apple, devicecheck_pem) as client:
        await client.refresh(attest_receipt, now=NOW)
    token = apple.requests[0].headers["Authorization"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == KEY_ID
    claims = jwt.decode(
        token, devicecheck_key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims == {"iss": TEAM_ID, "iat": int(NOW.timestamp())}


async def test_refreshing_a_refreshed_receipt_raises_the_metric_again(
    apple: FakeAppleDataServer,
    authority: ReceiptAuthority,
    devicecheck_pem: bytes,
    attest_receipt: bytes,
) -> None:
    apple.next_risk_metric = 4
    async with _client(apple, devicecheck_pem) as client:
        first = await client.refresh(attest_receipt, now=NOW)
        assert first.receipt is not None
        # Too early: Apple keeps the receipt until its "not before" time.
        early = await client.refresh(first.receipt, now=NOW)
        assert early.status == "not_modified"
        apple.clock = lambda: NOW + timedelta(days=2)
        later = NOW + timedelta(days=2)
        second = await client.refresh(first.receipt, now=later)
    assert second.receipt is not None
    receipt = verify_receipt(second.receipt, now=later, trust_roots=[authority.root_certificate])
    assert receipt.risk_metric == 5


@pytest.mark.parametrize(("status", "outcome"), [(304, "not_modified"), (404, "no_data")])
async def test_not_modified_and_no_data_are_results_not_errors(
    apple: FakeAppleDataServer,
    devicecheck_pem: bytes,
    attest_receipt: bytes,
    status: int,
    outcome: str,
) -> None:
    apple.respond(status)
    async with _client(apple, devicecheck_pem) as client:
        result = await client.refresh(attest_receipt, now=NOW)
    assert result.status == outcome
    assert result.receipt is None


async def test_wrong_devicecheck_key_is_unauthorized(
    apple: FakeAppleDataServer, attest_receipt: bytes
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    error = await _refresh_error(_client(apple, other), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED
    assert "401" in error.message
    assert len(apple.requests) == 1  # never retried


async def test_wrong_team_id_is_unauthorized(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    error = await _refresh_error(
        _client(apple, devicecheck_pem, team_id="ZZZZZ99999"), attest_receipt
    )
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED


async def test_scripted_403_is_unauthorized(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(403)
    error = await _refresh_error(_client(apple, devicecheck_pem), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAUTHORIZED


async def test_rate_limit_then_success_is_retried(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(ScriptedResponse(429, b"slow down", headers={"Retry-After": "0"}))
    async with _client(apple, devicecheck_pem) as client:
        result = await client.refresh(attest_receipt, now=NOW)
    assert result.status == "updated"
    assert [request.status for request in apple.requests] == [429, 200]


async def test_rate_limit_that_persists_is_a_typed_error(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(429, 429, 429)
    error = await _refresh_error(_client(apple, devicecheck_pem), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_RATE_LIMITED
    assert len(apple.requests) == 3


async def test_server_errors_exhaust_retries(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(500, 502, 503, 500)
    error = await _refresh_error(_client(apple, devicecheck_pem, retries=2), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE
    assert "503" in error.message
    assert [request.status for request in apple.requests] == [500, 502, 503]


async def test_backoff_grows_between_retries(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(500, 500)
    started = time.monotonic()
    async with _client(apple, devicecheck_pem, backoff=0.1) as client:
        result = await client.refresh(attest_receipt, now=NOW)
    # Waits of at least 0.05 s and 0.1 s (half-jittered 0.1 and 0.2) before the third attempt.
    assert time.monotonic() - started >= 0.15
    assert result.status == "updated"


async def test_timeout_is_a_typed_error(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(ScriptedResponse(200, delay=1.0), ScriptedResponse(200, delay=1.0))
    error = await _refresh_error(
        _client(apple, devicecheck_pem, timeout=0.2, retries=1), attest_receipt
    )
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE
    assert "timed out" in error.message


async def test_slow_answer_within_the_timeout_succeeds(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    apple.respond(ScriptedResponse(200, delay=0.2))
    async with _client(apple, devicecheck_pem, timeout=2.0) as client:
        result = await client.refresh(attest_receipt, now=NOW)
    assert result.status == "updated"


async def test_unreachable_server_is_unavailable(devicecheck_pem: bytes) -> None:
    client = ReceiptRefreshClient(
        team_id=TEAM_ID,
        key_id=KEY_ID,
        private_key_pem=devicecheck_pem,
        base_url="http://127.0.0.1:9",
        retries=0,
        timeout=1.0,
    )
    error = await _refresh_error(client, b"\x30\x00")
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE


async def test_bad_request_and_garbage_200_are_failures(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    # The fake, like Apple, refuses a receipt it did not sign.
    error = await _refresh_error(_client(apple, devicecheck_pem), b"not a receipt")
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_FAILED
    assert "400" in error.message
    apple.respond(ScriptedResponse(200, b"!!! not base64 !!!"))
    error = await _refresh_error(_client(apple, devicecheck_pem), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_FAILED


async def test_an_answer_whose_body_does_not_decode_is_unavailable(
    apple: FakeAppleDataServer, devicecheck_pem: bytes, attest_receipt: bytes
) -> None:
    """A 200 with a corrupt Content-Encoding (a broken egress proxy): httpx raises a
    DecodingError, which is neither a timeout nor a transport error; typed all the same."""
    broken = ScriptedResponse(200, b"this is not gzip", headers={"Content-Encoding": "gzip"})
    apple.respond(broken, broken)
    error = await _refresh_error(_client(apple, devicecheck_pem, retries=1), attest_receipt)
    assert error.reason == Reason.APPLE_RECEIPT_REFRESH_UNAVAILABLE
    assert "DecodingError" in error.message
    assert len(apple.requests) == 2  # retried once, as for other unavailability


def test_base_urls_follow_the_environment(devicecheck_pem: bytes) -> None:
    production = ReceiptRefreshClient(
        team_id=TEAM_ID, key_id=KEY_ID, private_key_pem=devicecheck_pem
    )
    development = ReceiptRefreshClient(
        team_id=TEAM_ID, key_id=KEY_ID, private_key_pem=devicecheck_pem, environment="development"
    )
    assert production.url == f"{PRODUCTION_BASE_URL}/v1/attestationData"
    assert development.url == f"{DEVELOPMENT_BASE_URL}/v1/attestationData"


def test_a_non_p256_key_is_refused_at_construction() -> None:
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        ReceiptRefreshClient(team_id=TEAM_ID, key_id=KEY_ID, private_key_pem=pem)


async def test_fake_mangles_the_client_hash_exactly_as_apple_does(
    apple: FakeAppleDataServer,
    authority: ReceiptAuthority,
    devicecheck_pem: bytes,
    attest_receipt: bytes,
) -> None:
    # veehaitch-ios-14.2: Apple's ATTEST receipt held the first hash, its refreshed RECEIPT the
    # second (the hash decoded as UTF-8 with replacement characters).
    original = base64.b64decode("i+ZcylFa0JfJU5Z9GNY12G3XihQu09B3UmvtEca+xns=")
    refreshed = "77+977+9XO+/vVFa0Jfvv71T77+9fRjvv70177+9bdeKFC7vv73vv713Umvvv70Rxr7vv717"
    template = verify_receipt(attest_receipt, now=NOW, trust_roots=[authority.root_certificate])
    receipt = authority.issue(
        app_id=APP_ID,
        attested_certificate_der=template.attested_certificate,
        client_hash=original,
        creation_time=NOW,
    )
    async with _client(apple, devicecheck_pem) as client:
        result = await client.refresh(receipt, now=NOW)
    assert result.receipt is not None
    fresh = verify_receipt(result.receipt, now=NOW, trust_roots=[authority.root_certificate])
    assert base64.b64encode(fresh.client_hash).decode() == refreshed
