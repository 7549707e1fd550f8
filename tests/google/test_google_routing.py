"""Which path reads a token when an app has both local Play Console keys and a service account:
standard tokens (requestHash) go to Google, classic ones (nonce) are decrypted locally."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from play_support import KEYS, NONCE, NOW, PACKAGE, REQUEST_HASH

from appintegrity.errors import GoogleVerificationError
from appintegrity.google import (
    Decision,
    GoogleApiDecoder,
    PlayIntegrityPolicy,
    PlayIntegrityVerifier,
    PolicyResult,
)
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.fake_google import FakeGoogleServer

SERVICE_ACCOUNT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# Standard tokens are sealed under keys only Google holds; classic ones under the app's own
# (KEYS, the ``device`` fixture's).
GOOGLE_MANAGED = PlayIntegrityTestKeys.generate()


@pytest.fixture
def google_device(device: SoftwareAndroidDevice) -> SoftwareAndroidDevice:
    return SoftwareAndroidDevice(
        PACKAGE, keys=GOOGLE_MANAGED, certificate_digest=device.certificate_digest, version_code=42
    )


@pytest.fixture
def google(google_device: SoftwareAndroidDevice) -> Iterator[FakeGoogleServer]:
    with FakeGoogleServer() as server:
        server.register(google_device)
        yield server


Check = Callable[[PlayIntegrityVerifier], Awaitable[PolicyResult]]


def with_verifier(
    google: FakeGoogleServer, policy: PlayIntegrityPolicy, check: Check, *, local: bool = True
) -> PolicyResult:
    """Run ``check`` against a verifier with a decoder (and the app's local keys if ``local``)."""
    account = google.make_service_account(private_key=SERVICE_ACCOUNT_KEY)

    async def run() -> PolicyResult:
        async with GoogleApiDecoder(
            service_account_info=account, base_url=google.url, backoff=0.01
        ) as decoder:
            keys = KEYS.as_keys() if local else None
            return await check(PlayIntegrityVerifier(policy, keys=keys, decoder=decoder))

    return asyncio.run(run())


def test_standard_token_goes_to_google_when_local_keys_are_configured_too(
    google: FakeGoogleServer, google_device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    token = google_device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    result = with_verifier(
        google, policy, lambda v: v.verify(token, now=NOW, request_hash=REQUEST_HASH)
    )
    assert (result.decision, result.reasons) == (Decision.ALLOW, ())
    assert google.decode_requests == 1


def test_classic_token_is_decrypted_locally_when_a_decoder_is_configured_too(
    google: FakeGoogleServer, device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    token = device.request_integrity_token(nonce=NONCE, now=NOW)
    result = with_verifier(google, policy, lambda v: v.verify(token, now=NOW, nonce=NONCE))
    assert (result.decision, result.reasons) == (Decision.ALLOW, ())
    assert (google.token_requests, google.decode_requests) == (0, 0)


def test_classic_token_goes_to_google_without_local_keys(
    google: FakeGoogleServer, google_device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    token = google_device.request_integrity_token(nonce=NONCE, now=NOW)
    result = with_verifier(
        google, policy, lambda v: v.verify(token, now=NOW, nonce=NONCE), local=False
    )
    assert result.decision is Decision.ALLOW
    assert google.decode_requests == 1


def test_classic_token_under_other_keys_is_not_sent_to_google(
    google: FakeGoogleServer, google_device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    token = google_device.request_integrity_token(nonce=NONCE, now=NOW)
    with pytest.raises(GoogleVerificationError) as caught:
        with_verifier(google, policy, lambda v: v.verify(token, now=NOW, nonce=NONCE))
    assert caught.value.reason == "google.decryption_failed"
    assert google.decode_requests == 0


def test_token_of_unknown_kind_is_read_locally_first_then_by_google(
    google: FakeGoogleServer,
    device: SoftwareAndroidDevice,
    google_device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
) -> None:
    classic = device.request_integrity_token(nonce=NONCE, now=NOW)
    standard = google_device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)

    async def read_both(verifier: PlayIntegrityVerifier) -> PolicyResult:
        local = await verifier.read_token(classic)
        assert google.decode_requests == 0
        assert local == device.verdict_payload(nonce=NONCE, now=NOW)
        remote = await verifier.read_token(standard)
        assert google.decode_requests == 1
        assert remote == google_device.verdict_payload(request_hash=REQUEST_HASH, now=NOW)
        return await verifier.verify(standard, now=NOW, request_hash=REQUEST_HASH)

    # The second decode of the standard token is Google's replay answer: cleared verdicts.
    assert with_verifier(google, policy, read_both).decision is Decision.BLOCK


def test_token_of_unknown_kind_with_a_bad_signature_is_not_sent_to_google(
    google: FakeGoogleServer, device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    forged = device.seal(
        device.verdict_payload(nonce=NONCE, now=NOW),
        signing_key=GOOGLE_MANAGED.signing_key,  # decrypts with our key, signed by another
    )

    async def read(verifier: PlayIntegrityVerifier) -> PolicyResult:
        await verifier.read_token(forged)
        raise AssertionError("a forged token was read")

    with pytest.raises(GoogleVerificationError) as caught:
        with_verifier(google, policy, read)
    assert caught.value.reason == "google.signature_invalid"
    assert google.decode_requests == 0
