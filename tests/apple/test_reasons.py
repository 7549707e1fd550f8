"""One test per reason code, each built with the test kit, asserting the exact code."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest

from appintegrity.apple import AppAttestVerifier, AttestedKey, Environment, verify_assertion
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.ios import AppAttestCA, Defect, SoftwareIPhone

APP_ID = "ABCDE12345.com.example.app"
CHALLENGE = "server-challenge-7f3a"


@pytest.fixture
def phone(app_attest_ca: AppAttestCA) -> SoftwareIPhone:
    return SoftwareIPhone(APP_ID, ca=app_attest_ca)


@pytest.fixture
def verifier(app_attest_ca: AppAttestCA) -> AppAttestVerifier:
    return AppAttestVerifier(APP_ID, trust_roots=app_attest_ca.trust_roots)


def _attest(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, now: datetime, defect: Defect | None
) -> AttestedKey:
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=now, defect=defect)
    return verifier.verify_attestation(attestation, key_id=key_id, challenge=CHALLENGE, now=now)


def test_test_kit_attestation_verifies(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now)
    key = verifier.verify_attestation(
        attestation, key_id=key_id, challenge=CHALLENGE, now=attest_now
    )
    assert key.key_id_b64 == key_id
    assert key.public_key == phone.public_key(key_id)
    assert key.environment is Environment.PRODUCTION
    assert key.app_id == APP_ID
    assert key.counter == 0
    assert key.receipt == b""
    assert key.extensions is None
    assert len(key.certificate_chain) == 2


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        (Defect.WRONG_FORMAT, Reason.APPLE_UNSUPPORTED_FORMAT),
        (Defect.EXPIRED_LEAF, Reason.APPLE_CERTIFICATE_CHAIN_INVALID),
        (Defect.UNTRUSTED_CHAIN, Reason.APPLE_CERTIFICATE_CHAIN_INVALID),
        (Defect.FORGED_LEAF, Reason.APPLE_CERTIFICATE_CHAIN_INVALID),
        (Defect.WRONG_NONCE, Reason.APPLE_NONCE_MISMATCH),
        (Defect.MISSING_NONCE, Reason.APPLE_NONCE_MISMATCH),
        (Defect.WRONG_KEY_ID, Reason.APPLE_KEY_ID_MISMATCH),
        (Defect.WRONG_RP_ID, Reason.APPLE_APP_ID_MISMATCH),
        (Defect.NONZERO_COUNTER, Reason.APPLE_COUNTER_INVALID),
        (Defect.WRONG_ENVIRONMENT, Reason.APPLE_ENVIRONMENT_MISMATCH),
        (Defect.WRONG_AAGUID, Reason.APPLE_ENVIRONMENT_MISMATCH),
        (Defect.WRONG_CREDENTIAL_ID, Reason.APPLE_CREDENTIAL_ID_MISMATCH),
        (Defect.TRUNCATED_AUTH_DATA, Reason.APPLE_MALFORMED),
    ],
)
def test_attestation_defect_is_refused_with_its_reason(
    verifier: AppAttestVerifier,
    phone: SoftwareIPhone,
    attest_now: datetime,
    defect: Defect,
    reason: Reason,
) -> None:
    with pytest.raises(AppleVerificationError) as caught:
        _attest(verifier, phone, attest_now, defect)
    assert caught.value.reason == reason
    assert caught.value.message


def test_attestation_checked_after_the_leaf_expired_is_refused(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            attestation, key_id=key_id, challenge=CHALLENGE, now=attest_now + timedelta(days=61)
        )
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID
    assert "expired" in caught.value.message


def test_attestation_for_another_key_id_is_refused(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id, other = phone.generate_key(), phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(attestation, key_id=other, challenge=CHALLENGE, now=attest_now)
    assert caught.value.reason == Reason.APPLE_KEY_ID_MISMATCH


def test_first_failing_step_is_reported(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    """Wrong challenge *and* wrong app: Apple's order puts the nonce first."""
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now, defect=Defect.WRONG_RP_ID)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(attestation, key_id=key_id, challenge="other", now=attest_now)
    assert caught.value.reason == Reason.APPLE_NONCE_MISMATCH


def test_client_data_hash_instead_of_challenge(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    server_bytes = bytes(range(32))
    attestation = phone.attest_key(key_id, client_data_hash=server_bytes, now=attest_now)
    key = verifier.verify_attestation(
        attestation, key_id=key_id, client_data_hash=server_bytes, now=attest_now
    )
    assert key.key_id_b64 == key_id
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            attestation, key_id=key_id, challenge=server_bytes, now=attest_now
        )
    assert caught.value.reason == Reason.APPLE_NONCE_MISMATCH


def test_challenge_and_client_data_hash_are_exclusive(verifier: AppAttestVerifier) -> None:
    with pytest.raises(ValueError):
        verifier.verify_attestation(
            b"", key_id="k", challenge="c", client_data_hash=b"x", now=datetime.now()
        )
    with pytest.raises(ValueError):
        verifier.verify_attestation(b"", key_id="k", now=datetime.now())


def test_challenge_bytes_and_text_are_the_same_challenge(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "défi", now=attest_now)
    verifier.verify_attestation(
        attestation, key_id=key_id, challenge="défi".encode(), now=attest_now
    )


def test_ios27_extension_map_is_exposed(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key = _attest(verifier, phone, attest_now, Defect.IOS27_EXTENSIONS)
    assert key.extensions is not None
    assert key.extensions["apple_bundle_version_01"] == "1"
    assert key.extensions["apple_validation_category_01"] == b"\x01\x00\x00\x00"
    phone27 = phone.with_defect(Defect.IOS27_EXTENSIONS)
    assertion = phone27.generate_assertion(key.key_id_b64, "payload")
    result = verifier.verify_assertion(
        assertion, client_data="payload", public_key=key.public_key, previous_counter=0
    )
    assert result.counter == 1
    assert result.extensions is not None
    assert result.extensions["apple_bundle_version_01"] == "1"


def test_development_phone_is_refused_in_production_and_accepted_in_development(
    app_attest_ca: AppAttestCA, attest_now: datetime
) -> None:
    phone = SoftwareIPhone(APP_ID, ca=app_attest_ca, environment="development")
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now)
    production = AppAttestVerifier(APP_ID, trust_roots=app_attest_ca.trust_roots)
    with pytest.raises(AppleVerificationError) as caught:
        production.verify_attestation(
            attestation, key_id=key_id, challenge=CHALLENGE, now=attest_now
        )
    assert caught.value.reason == Reason.APPLE_ENVIRONMENT_MISMATCH
    development = AppAttestVerifier(
        APP_ID, environment=Environment.DEVELOPMENT, trust_roots=app_attest_ca.trust_roots
    )
    key = development.verify_attestation(
        attestation, key_id=key_id, challenge=CHALLENGE, now=attest_now
    )
    assert key.environment is Environment.DEVELOPMENT


def test_one_verifier_accepts_several_app_ids(
    app_attest_ca: AppAttestCA, attest_now: datetime
) -> None:
    apps = ["ABCDE12345.com.example.app", "ABCDE12345.com.example.clip", "ZZZZZ99999.com.other"]
    verifier = AppAttestVerifier(apps, trust_roots=app_attest_ca.trust_roots)
    for app_id in apps:
        phone = SoftwareIPhone(app_id, ca=app_attest_ca)
        key_id = phone.generate_key()
        key = verifier.verify_attestation(
            phone.attest_key(key_id, CHALLENGE, now=attest_now),
            key_id=key_id,
            challenge=CHALLENGE,
            now=attest_now,
        )
        assert key.app_id == app_id
        result = verifier.verify_assertion(
            phone.generate_assertion(key_id, "x"),
            client_data="x",
            public_key=key.public_key,
            previous_counter=0,
        )
        assert result.app_id == app_id
        # Narrowed to the key's own app, another accepted app id does not do.
        with pytest.raises(AppleVerificationError) as caught:
            verifier.verify_assertion(
                phone.generate_assertion(key_id, "x"),
                client_data="x",
                public_key=key.public_key,
                previous_counter=1,
                app_id=next(other for other in apps if other != app_id),
            )
        assert caught.value.reason == Reason.APPLE_APP_ID_MISMATCH
    stranger = SoftwareIPhone("ABCDE12345.com.example.unlisted", ca=app_attest_ca)
    key_id = stranger.generate_key()
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            stranger.attest_key(key_id, CHALLENGE, now=attest_now),
            key_id=key_id,
            challenge=CHALLENGE,
            now=attest_now,
        )
    assert caught.value.reason == Reason.APPLE_APP_ID_MISMATCH


def test_embedded_apple_root_refuses_test_kit_chain(
    phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    with pytest.raises(AppleVerificationError) as caught:
        AppAttestVerifier(APP_ID).verify_attestation(
            phone.attest_key(key_id, CHALLENGE, now=attest_now),
            key_id=key_id,
            challenge=CHALLENGE,
            now=attest_now,
        )
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID


# Assertions


@pytest.fixture
def attested(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> AttestedKey:
    return _attest(verifier, phone, attest_now, None)


def test_assertions_verify_with_increasing_counters(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attested: AttestedKey
) -> None:
    counter = attested.counter
    for body in ("first", b"second", "third"):
        result = verifier.verify_assertion(
            phone.generate_assertion(attested.key_id_b64, body),
            client_data=body,
            public_key=attested.public_key,
            previous_counter=counter,
        )
        assert result.counter == counter + 1
        counter = result.counter
    assert phone.counter(attested.key_id_b64) == 3


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        (Defect.BAD_SIGNATURE, Reason.APPLE_SIGNATURE_INVALID),
        (Defect.WRONG_RP_ID, Reason.APPLE_APP_ID_MISMATCH),
        (Defect.REPLAYED_COUNTER, Reason.APPLE_COUNTER_INVALID),
        (Defect.TRUNCATED_AUTH_DATA, Reason.APPLE_MALFORMED),
    ],
)
def test_assertion_defect_is_refused_with_its_reason(
    verifier: AppAttestVerifier,
    phone: SoftwareIPhone,
    attested: AttestedKey,
    defect: Defect,
    reason: Reason,
) -> None:
    first = phone.generate_assertion(attested.key_id_b64, "body")
    verifier.verify_assertion(
        first, client_data="body", public_key=attested.public_key, previous_counter=0
    )
    broken = phone.with_defect(defect).generate_assertion(attested.key_id_b64, "body")
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_assertion(
            broken, client_data="body", public_key=attested.public_key, previous_counter=1
        )
    assert caught.value.reason == reason


def test_assertion_over_other_client_data_is_refused(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attested: AttestedKey
) -> None:
    assertion = phone.generate_assertion(attested.key_id_b64, '{"amount": 1}')
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_assertion(
            assertion,
            client_data='{"amount": 1000}',
            public_key=attested.public_key,
            previous_counter=0,
        )
    assert caught.value.reason == Reason.APPLE_SIGNATURE_INVALID


def test_replaying_a_valid_assertion_is_refused(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attested: AttestedKey
) -> None:
    assertion = phone.generate_assertion(attested.key_id_b64, "body")
    result = verifier.verify_assertion(
        assertion, client_data="body", public_key=attested.public_key, previous_counter=0
    )
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_assertion(
            assertion,
            client_data="body",
            public_key=attested.public_key,
            previous_counter=result.counter,
        )
    assert caught.value.reason == Reason.APPLE_COUNTER_INVALID


def test_assertion_with_another_key_is_refused(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attested: AttestedKey
) -> None:
    other = phone.generate_key()
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_assertion(
            phone.generate_assertion(other, "body"),
            client_data="body",
            public_key=attested.public_key,
            previous_counter=0,
        )
    assert caught.value.reason == Reason.APPLE_SIGNATURE_INVALID


def test_assertion_accepts_every_public_key_form_and_encoding(
    phone: SoftwareIPhone, attested: AttestedKey
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from appintegrity.apple import load_public_key

    key = load_public_key(attested.public_key)
    forms: list[object] = [
        key,
        attested.public_key,
        base64.b64encode(attested.public_key).decode(),
        key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(),
        key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        base64.b64encode(
            key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
    ]
    for counter, form in enumerate(forms):
        raw = phone.generate_assertion(attested.key_id_b64, "body")
        encodings: list[bytes | str] = [
            raw,
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
        ]
        for encoding in encodings:
            result = verify_assertion(
                encoding,
                client_data="body",
                public_key=form,  # type: ignore[arg-type]
                previous_counter=counter,
                app_id=APP_ID,
            )
            assert result.counter == counter + 1


@pytest.mark.parametrize(
    "bad_key",
    [
        "not a key",
        b"\x04" + b"\x00" * 64,
        b"",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_unusable_public_key_is_malformed(
    phone: SoftwareIPhone, attested: AttestedKey, bad_key: str | bytes
) -> None:
    with pytest.raises(AppleVerificationError) as caught:
        verify_assertion(
            phone.generate_assertion(attested.key_id_b64, "body"),
            client_data="body",
            public_key=bad_key,
            previous_counter=0,
            app_id=APP_ID,
        )
    assert caught.value.reason == Reason.APPLE_MALFORMED


def test_p384_public_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from appintegrity.apple import load_public_key

    with pytest.raises(AppleVerificationError) as caught:
        load_public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
    assert caught.value.reason == Reason.APPLE_MALFORMED


def test_undecodable_key_id_is_malformed(
    verifier: AppAttestVerifier, phone: SoftwareIPhone, attest_now: datetime
) -> None:
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, CHALLENGE, now=attest_now)
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(AppleVerificationError) as caught:
            verifier.verify_attestation(
                attestation, key_id=bad, challenge=CHALLENGE, now=attest_now
            )
        assert caught.value.reason == Reason.APPLE_MALFORMED
