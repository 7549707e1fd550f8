"""Review findings on local Play Integrity token reading: exact reason codes."""

from __future__ import annotations

import pytest
from play_support import KEYS, NOW, REQUEST_HASH

from appintegrity.errors import GoogleVerificationError, Reason
from appintegrity.google.token import decode_token_locally
from appintegrity.google.verdict import IntegrityVerdict
from appintegrity.testing.android import SoftwareAndroidDevice

JWE_HEADER = {"alg": "A256KW", "enc": "A256GCM"}
JWS_HEADER = {"alg": "ES256"}


def _reason(token: str) -> str:
    with pytest.raises(GoogleVerificationError) as info:
        decode_token_locally(token, KEYS.as_keys())
    return info.value.reason


def test_an_accepted_jws_header_is_not_accepted_as_the_jwe_header(
    device: SoftwareAndroidDevice,
) -> None:
    payload = device.verdict_payload(request_hash=REQUEST_HASH, now=NOW)
    # A genuine token first: both of its headers are now known good, each for its own layer.
    good = device.seal(payload, jwe_header=JWE_HEADER, jws_header=JWS_HEADER)
    assert decode_token_locally(good, KEYS.as_keys())["requestDetails"]
    # The JWS header (alg ES256) as the JWE header: not A256KW, so refused before decryption.
    swapped = device.seal(payload, jwe_header=JWS_HEADER, jws_header=JWS_HEADER)
    assert _reason(swapped) == Reason.GOOGLE_DECRYPTION_FAILED


def test_an_accepted_jwe_header_is_not_accepted_as_the_jws_header(
    device: SoftwareAndroidDevice,
) -> None:
    payload = device.verdict_payload(request_hash=REQUEST_HASH, now=NOW)
    good = device.seal(payload, jwe_header=JWE_HEADER, jws_header=JWS_HEADER)
    assert decode_token_locally(good, KEYS.as_keys())["requestDetails"]
    # The JWE header (alg A256KW) on the signature, even signed with the right key: not ES256.
    swapped = device.seal(payload, jwe_header=JWE_HEADER, jws_header=JWE_HEADER)
    assert _reason(swapped) == Reason.GOOGLE_SIGNATURE_INVALID


@pytest.mark.parametrize("millis", [-1, -(10**18), 253_402_300_800_000])
def test_a_timestamp_outside_years_1970_to_9999_is_malformed(millis: int) -> None:
    # Both ends: a verdict that reads must also print (summary(), inspect, vector conclusions).
    payload = {
        "requestDetails": {"requestPackageName": "com.example.app", "timestampMillis": millis}
    }
    with pytest.raises(GoogleVerificationError) as info:
        IntegrityVerdict.from_payload(payload)
    assert info.value.reason == Reason.GOOGLE_MALFORMED


def test_the_earliest_and_latest_timestamps_read_and_print() -> None:
    for millis in (0, 253_402_300_799_999):
        verdict = IntegrityVerdict.from_payload(
            {"requestDetails": {"requestPackageName": "p", "timestampMillis": millis}}
        )
        assert verdict.summary()["timestamp"]
