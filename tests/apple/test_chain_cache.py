"""The intermediate → root link is verified once; the leaf's signature and validity every time."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest

from appintegrity.apple import (
    APPLE_APP_ATTESTATION_ROOT_SHA256,
    AppAttestVerifier,
    ChainVerifier,
    apple_app_attestation_root,
)
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.ios import AppAttestCA, Defect, SoftwareIPhone

APP_ID = "ABCDE12345.com.example.cache"


def test_intermediate_link_is_verified_once_and_leaf_every_time(attest_now: datetime) -> None:
    ca = AppAttestCA.generate(now=attest_now)  # a fresh CA: a fresh shared cache
    phone = SoftwareIPhone(APP_ID, ca=ca)
    verifier = AppAttestVerifier(APP_ID, trust_roots=ca.trust_roots)
    stats = verifier.chain_verifier.stats
    assert (stats.hits, stats.misses) == (0, 0)

    for _ in range(3):
        key_id = phone.generate_key()
        verifier.verify_attestation(
            phone.attest_key(key_id, "c", now=attest_now),
            key_id=key_id,
            challenge="c",
            now=attest_now,
        )
    stats = verifier.chain_verifier.stats
    assert (stats.hits, stats.misses) == (2, 1)

    # Same intermediate, but the leaf is signed by another key: refused although the
    # intermediate link is a cache hit.
    key_id = phone.generate_key()
    forged = phone.attest_key(key_id, "c", now=attest_now, defect=Defect.FORGED_LEAF)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(forged, key_id=key_id, challenge="c", now=attest_now)
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID
    assert "signature" in caught.value.message

    # Validity is checked at `now` on every call, cached link or not.
    key_id = phone.generate_key()
    good = phone.attest_key(key_id, "c", now=attest_now)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            good, key_id=key_id, challenge="c", now=attest_now + timedelta(days=3651)
        )
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID


def test_look_alike_intermediate_is_not_served_from_the_cache(attest_now: datetime) -> None:
    ca = AppAttestCA.generate(now=attest_now)
    phone = SoftwareIPhone(APP_ID, ca=ca)
    verifier = AppAttestVerifier(APP_ID, trust_roots=ca.trust_roots)
    key_id = phone.generate_key()
    verifier.verify_attestation(
        phone.attest_key(key_id, "c", now=attest_now), key_id=key_id, challenge="c", now=attest_now
    )
    # Same names, other keys: the cache is keyed by DER, so this link is verified (and fails).
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_attestation(
            phone.attest_key(key_id, "c", now=attest_now, defect=Defect.UNTRUSTED_CHAIN),
            key_id=key_id,
            challenge="c",
            now=attest_now,
        )
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID
    assert verifier.chain_verifier.stats.misses == 2


def test_embedded_root_is_the_pinned_apple_root() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    root = apple_app_attestation_root()
    der = root.public_bytes(Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == APPLE_APP_ATTESTATION_ROOT_SHA256
    assert "Apple App Attestation Root CA" in root.subject.rfc4514_string()


def test_leaf_cannot_act_as_a_ca(app_attest_ca: AppAttestCA, attest_now: datetime) -> None:
    """A chain whose 'intermediate' is a leaf (ca=false) is refused."""
    phone = SoftwareIPhone(APP_ID, ca=app_attest_ca)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "c", now=attest_now)
    import cbor2

    decoded = cbor2.loads(attestation)
    leaf_der = decoded["attStmt"]["x5c"][0]
    chain = ChainVerifier(app_attest_ca.trust_roots)
    with pytest.raises(AppleVerificationError) as caught:
        chain.verify([leaf_der, leaf_der, app_attest_ca.intermediate_der], attest_now)
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID


def test_chain_may_include_the_trusted_root(
    app_attest_ca: AppAttestCA, attest_now: datetime
) -> None:
    import cbor2
    from cryptography.hazmat.primitives.serialization import Encoding

    phone = SoftwareIPhone(APP_ID, ca=app_attest_ca)
    key_id = phone.generate_key()
    x5c = cbor2.loads(phone.attest_key(key_id, "c", now=attest_now))["attStmt"]["x5c"]
    root_der = app_attest_ca.root_certificate.public_bytes(Encoding.DER)
    leaf = ChainVerifier(app_attest_ca.trust_roots).verify([*x5c, root_der], attest_now)
    assert leaf.public_bytes(Encoding.DER) == x5c[0]
    other = AppAttestCA.generate(now=attest_now)
    with pytest.raises(AppleVerificationError) as caught:
        ChainVerifier(other.trust_roots).verify([*x5c, root_der], attest_now)
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID
