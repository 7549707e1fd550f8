"""Review findings on local Play Integrity token reading: exact reason codes."""

from __future__ import annotations

import pytest
from play_support import KEYS, NOW, REQUEST_HASH

from appintegrity.errors import GoogleVerificationError, Reason
from appintegrity.google.token import decode_token_locally
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
