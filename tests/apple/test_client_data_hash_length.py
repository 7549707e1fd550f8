"""A clientDataHash the caller passes must look like one: never empty or a few bytes long."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from appintegrity.apple import AppAttestVerifier
from appintegrity.cli.vectors import VectorFormatError, apple_attestation
from appintegrity.errors import AppleVerificationError
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

APP_ID = "ABCDE12345.com.example.app"


@pytest.mark.parametrize("length", [0, 1, 15])
def test_a_too_short_client_data_hash_is_a_caller_error(length: int) -> None:
    ca = AppAttestCA.generate()
    phone = SoftwareIPhone(APP_ID, ca=ca)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, client_data_hash=bytes(32))
    verifier = AppAttestVerifier(APP_ID, trust_roots=[ca.root_certificate])
    with pytest.raises(ValueError, match="at least 16 bytes"):
        verifier.verify_attestation(
            attestation, key_id=key_id, client_data_hash=bytes(length), now=datetime.now(UTC)
        )


def test_sixteen_bytes_and_more_are_accepted() -> None:
    ca = AppAttestCA.generate()
    phone = SoftwareIPhone(APP_ID, ca=ca)
    key_id = phone.generate_key()
    verifier = AppAttestVerifier(APP_ID, trust_roots=[ca.root_certificate])
    for length in (16, 24, 32):
        hash_ = bytes(range(length))
        attested = verifier.verify_attestation(
            phone.attest_key(key_id, client_data_hash=hash_),
            key_id=key_id,
            client_data_hash=hash_,
            now=datetime.now(UTC),
        )
        assert attested.key_id_b64 == key_id


def test_a_vector_with_an_empty_client_data_hash_is_unusable() -> None:
    inputs = {
        "attestation": "AAAA",
        "key_id": base64.b64encode(bytes(32)).decode(),
        "client_data_hash_b64": "",
        "app_id": APP_ID,
        "environment": "production",
    }
    with pytest.raises(VectorFormatError):
        apple_attestation.run(inputs, datetime.now(UTC))


def test_an_alternative_client_data_hash_is_checked_in_the_same_pass() -> None:
    ca = AppAttestCA.generate()
    phone = SoftwareIPhone(APP_ID, ca=ca)
    key_id = phone.generate_key()
    raw = bytes(range(32))
    attestation = phone.attest_key(key_id, client_data_hash=raw)  # the raw bytes, unhashed
    verifier = AppAttestVerifier(APP_ID, trust_roots=[ca.root_certificate])
    now = datetime.now(UTC)
    attested = verifier.verify_attestation(
        attestation, key_id=key_id, challenge=raw, also_client_data_hash=raw, now=now
    )
    assert attested.key_id_b64 == key_id
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            attestation, key_id=key_id, challenge=raw, also_client_data_hash=bytes(32), now=now
        )
    assert caught.value.reason == "apple.nonce_mismatch"
