"""The decodeIntegrityToken path against the local fake of Google, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from play_support import NOW, PACKAGE, REQUEST_HASH

from appintegrity.errors import GoogleVerificationError
from appintegrity.google import (
    Decision,
    GoogleApiDecoder,
    PlayIntegrityPolicy,
    PlayIntegrityVerifier,
)
from appintegrity.testing.android import SoftwareAndroidDevice
from appintegrity.testing.fake_google import FakeGoogleServer

SERVICE_ACCOUNT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google(device: SoftwareAndroidDevice) -> Iterator[FakeGoogleServer]:
    with FakeGoogleServer() as server:
        server.register(device)
        yield server


@pytest.fixture
def account(google: FakeGoogleServer) -> dict[str, str]:
    return google.make_service_account(private_key=SERVICE_ACCOUNT_KEY)


def decode(google: FakeGoogleServer, account: dict[str, str], token: str, **options: Any) -> Any:
    package = options.pop("package", PACKAGE)

    async def run() -> dict[str, object]:
        settings: dict[str, Any] = {"retries": 3, "backoff": 0.01, "timeout": 2.0, **options}
        async with GoogleApiDecoder(
            service_account_info=account, base_url=google.url, **settings
        ) as decoder:
            return await decoder.decode(package, token)

    return asyncio.run(run())


def reason(google: FakeGoogleServer, account: dict[str, str], token: str, **options: Any) -> str:
    with pytest.raises(GoogleVerificationError) as caught:
        decode(google, account, token, **options)
    return caught.value.reason


def test_decode_returns_the_token_payload(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    payload = device.verdict_payload(request_hash=REQUEST_HASH, now=NOW)
    assert decode(google, account, device.seal(payload)) == payload
    assert (google.token_requests, google.decode_requests) == (1, 1)


def test_verifier_through_google_allows_a_genuine_token_and_blocks_its_replay(
    google: FakeGoogleServer,
    account: dict[str, str],
    device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)

    async def run() -> tuple[Decision, Decision, tuple[str, ...]]:
        async with GoogleApiDecoder(
            service_account_info=account, base_url=google.url, backoff=0.01
        ) as decoder:
            verifier = PlayIntegrityVerifier(policy, decoder=decoder)
            first = await verifier.verify(token, now=NOW, request_hash=REQUEST_HASH)
            second = await verifier.verify(token, now=NOW, request_hash=REQUEST_HASH)
            return first.decision, second.decision, second.reasons

    first, second, reasons = asyncio.run(run())
    assert first is Decision.ALLOW
    # Google clears a standard token's verdicts on the second decode: UNEVALUATED never passes.
    assert second is Decision.BLOCK
    assert reasons[:3] == (
        "google.app_not_recognized",
        "google.certificate_mismatch",
        "google.device_integrity_insufficient",
    )
    assert google.token_requests == 1  # the access token is cached between calls


def test_undecodable_token_is_a_bad_request(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    assert reason(google, account, token[:-12]) == "google.api_bad_request"
    assert google.decode_requests == 1  # 400 is not retried


def test_planned_400_is_a_bad_request(google: FakeGoogleServer, account: dict[str, str]) -> None:
    google.fail_next(400)
    assert reason(google, account, "x") == "google.api_bad_request"


def test_401_refreshes_once_then_is_unauthorized(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next(401, count=2)
    assert reason(google, account, "x") == "google.api_unauthorized"
    assert (google.token_requests, google.decode_requests) == (2, 2)


def test_revoked_access_token_is_refreshed_and_the_call_succeeds(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    token = device.request_integrity_token(nonce="n" * 24, now=NOW)

    async def run() -> None:
        async with GoogleApiDecoder(service_account_info=account, base_url=google.url) as decoder:
            await decoder.decode(PACKAGE, token)
            google.revoke_access_tokens()
            await decoder.decode(PACKAGE, token)

    asyncio.run(run())
    assert (google.token_requests, google.decode_requests) == (2, 3)


def test_concurrent_401s_after_revocation_share_one_refresh(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    tokens = [device.request_integrity_token(nonce="n" * 24, now=NOW) for _ in range(20)]

    async def run() -> None:
        async with GoogleApiDecoder(
            service_account_info=account, base_url=google.url, backoff=0.01
        ) as decoder:
            await decoder.decode(PACKAGE, tokens[0])
            google.revoke_access_tokens()
            await asyncio.gather(*(decoder.decode(PACKAGE, token) for token in tokens))

    asyncio.run(run())
    # One token for the first decode, one more after the revocation: not one per 401.
    assert google.token_requests == 2
    assert google.decode_requests == 1 + 20 + 20


def test_unknown_service_account_is_unauthorized(google: FakeGoogleServer) -> None:
    stranger = FakeGoogleServer().make_service_account(private_key=SERVICE_ACCOUNT_KEY)
    stranger["token_uri"] = google.token_uri
    assert reason(google, stranger, "x") == "google.api_unauthorized"
    assert google.decode_requests == 0


def test_package_not_linked_is_permission_denied(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    assert reason(google, account, token, package="com.other.app") == "google.api_permission_denied"
    assert google.decode_requests == 1


def test_429_is_retried_with_backoff_then_quota_exceeded(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next(429, count=3)
    assert reason(google, account, "x", retries=2) == "google.api_quota_exceeded"
    assert google.decode_requests == 3


def test_429_then_success(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    google.fail_next(429, retry_after=0)
    payload = decode(google, account, device.request_integrity_token(nonce="n" * 24, now=NOW))
    assert (
        payload["requestDetails"]
        == device.verdict_payload(nonce="n" * 24, now=NOW)["requestDetails"]
    )
    assert google.decode_requests == 2


def test_retry_after_longer_than_the_time_left_is_not_waited_for(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next(429, count=2, retry_after=5)
    started = time.monotonic()
    found = reason(google, account, "x", timeout=2.0, retries=1)  # total_timeout: 4 s
    assert found == "google.api_quota_exceeded"
    assert time.monotonic() - started < 2.0
    assert google.decode_requests == 1


def test_retries_stop_at_the_total_timeout(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next(503, count=5, retry_after=1)
    started = time.monotonic()
    found = reason(google, account, "x", retries=4, total_timeout=1.5)
    assert found == "google.api_unavailable"
    # Attempts at 0 s and 1 s; the next would start at 2 s, past the 1.5 s budget.
    assert google.decode_requests == 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_then_succeeds(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice, status: int
) -> None:
    google.fail_next(status, count=2)
    payload = decode(google, account, device.request_integrity_token(nonce="n" * 24, now=NOW))
    assert "requestDetails" in payload
    assert google.decode_requests == 3


def test_5xx_beyond_retries_is_unavailable(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next(503, count=4)
    assert reason(google, account, "x", retries=3) == "google.api_unavailable"
    assert google.decode_requests == 4


def test_timeout_is_unavailable(google: FakeGoogleServer, account: dict[str, str]) -> None:
    google.delay_next(1.0)
    assert reason(google, account, "x", timeout=0.2, retries=0) == "google.api_unavailable"


def test_timeout_then_success(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    google.delay_next(1.0)
    token = device.request_integrity_token(nonce="n" * 24, now=NOW)
    assert "requestDetails" in decode(google, account, token, timeout=0.3, retries=1)


def test_unreachable_google_is_unavailable(account: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = FakeGoogleServer()
    closed.close()

    async def run() -> None:
        async with GoogleApiDecoder(
            service_account_info=account,
            base_url=f"http://127.0.0.1:{port}",
            retries=1,
            backoff=0.01,
        ) as decoder:
            await decoder.decode(PACKAGE, "x")

    with pytest.raises(GoogleVerificationError) as caught:
        asyncio.run(run())
    assert caught.value.reason == "google.api_unavailable"


class LoopbackEndpoint:
    """A POST endpoint on loopback that counts and reads each request, then answers ``answer``
    (status, headers, body) or, with ``answer=None``, never answers (it hangs up after ``hold`` s).
    """

    def __init__(
        self,
        answer: tuple[int, dict[str, str], bytes] | None,
        *,
        path: str = "",
        hold: float = 10.0,
    ) -> None:
        self.requests = 0
        released = self.released = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                endpoint.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if answer is None:
                    released.wait(hold)
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def silent_token_endpoint() -> Iterator[LoopbackEndpoint]:
    """An OAuth token endpoint that reads each request and never answers."""
    endpoint = LoopbackEndpoint(None, path="/token")
    yield endpoint
    endpoint.close()


def test_access_token_refresh_keeps_to_the_decoder_timeout(
    google: FakeGoogleServer, account: dict[str, str], silent_token_endpoint: LoopbackEndpoint
) -> None:
    started = time.monotonic()
    found = reason(
        google,
        {**account, "token_uri": silent_token_endpoint.url},
        "x",
        timeout=0.5,
        retries=0,
    )
    elapsed = time.monotonic() - started
    assert found == "google.api_unavailable"
    assert elapsed < 3.0, f"the refresh waited {elapsed:.1f} s, not the 0.5 s timeout"
    assert (silent_token_endpoint.requests, google.decode_requests) == (1, 0)


def test_calls_waiting_on_a_failing_refresh_share_its_failure(
    google: FakeGoogleServer, account: dict[str, str], silent_token_endpoint: LoopbackEndpoint
) -> None:
    async def run() -> list[BaseException | dict[str, object]]:
        async with GoogleApiDecoder(
            service_account_info={**account, "token_uri": silent_token_endpoint.url},
            base_url=google.url,
            timeout=0.5,
            retries=0,
        ) as decoder:
            calls = (decoder.decode(PACKAGE, "x") for _ in range(5))
            return await asyncio.gather(*calls, return_exceptions=True)

    started = time.monotonic()
    outcomes = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert [getattr(o, "reason", o) for o in outcomes] == ["google.api_unavailable"] * 5
    # One refresh timed out; the four calls queued behind it did not each wait 0.5 s more.
    assert silent_token_endpoint.requests == 1
    assert elapsed < 1.5


def test_token_endpoint_that_times_out_is_retried(
    google: FakeGoogleServer, account: dict[str, str], silent_token_endpoint: LoopbackEndpoint
) -> None:
    found = reason(
        google, {**account, "token_uri": silent_token_endpoint.url}, "x", timeout=0.3, retries=1
    )
    assert found == "google.api_unavailable"
    assert (silent_token_endpoint.requests, google.decode_requests) == (2, 0)


def test_token_endpoint_outage_is_unavailable_not_unauthorized(
    google: FakeGoogleServer, account: dict[str, str]
) -> None:
    google.fail_next_token(503, count=3)  # google-auth's own three tries, about 3 s
    assert reason(google, account, "x", retries=0) == "google.api_unavailable"
    assert (google.token_requests, google.decode_requests) == (3, 0)


def test_token_endpoint_outage_is_retried_then_succeeds(
    google: FakeGoogleServer, account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    google.fail_next_token(503, count=3)
    token = device.request_integrity_token(nonce="n" * 24, now=NOW)
    assert "requestDetails" in decode(google, account, token, retries=1, total_timeout=10.0)
    assert (google.token_requests, google.decode_requests) == (4, 1)


def test_package_name_is_validated_before_any_request(account: dict[str, str]) -> None:
    async def run() -> None:
        async with GoogleApiDecoder(service_account_info=account) as decoder:
            await decoder.decode("../v1/evil", "x")

    with pytest.raises(ValueError):
        asyncio.run(run())


def test_decoder_needs_exactly_one_credential_source(account: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        GoogleApiDecoder()
    with pytest.raises(ValueError):
        GoogleApiDecoder(service_account_info=account, service_account_file="x.json")


# A decodeIntegrityToken stand-in's answer: 200 with a body its Content-Encoding cannot decode
# (what a broken egress proxy produces).
CORRUPT_GZIP = (
    200,
    {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    b"this is not gzip",
)


def test_an_answer_whose_body_does_not_decode_is_api_unavailable(
    account: dict[str, str], device: SoftwareAndroidDevice
) -> None:
    endpoint = LoopbackEndpoint(CORRUPT_GZIP)
    token = device.request_integrity_token(nonce="n" * 24, now=NOW)

    async def run() -> None:
        async with GoogleApiDecoder(
            service_account_info=account, base_url=endpoint.url, retries=1, backoff=0.01
        ) as decoder:
            await decoder.decode(PACKAGE, token)

    try:
        with pytest.raises(GoogleVerificationError) as caught:
            asyncio.run(run())
    finally:
        endpoint.close()
    assert caught.value.reason == "google.api_unavailable"
    assert "DecodingError" in caught.value.message
    assert endpoint.requests == 2  # retried once, as for other unavailability
