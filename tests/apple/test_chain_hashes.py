"""Certificates of the App Attest chain signed with a weak hash (SHA-1) are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from appintegrity.apple.certificates import ChainVerifier
from appintegrity.errors import AppleVerificationError
from appintegrity.testing.ios import AppAttestCA

NOW = datetime.now(UTC)


def _leaf(ca: AppAttestCA) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca.issue_credential_certificate(
        key.public_key(),
        bytes(32),
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=30),
    )
    return certificate.public_bytes(Encoding.DER)


def _resigned_with_sha1(der: bytes, ca: AppAttestCA) -> bytes:
    """The same leaf, its signature algorithm set to ecdsa-with-SHA1 and signed so."""
    certificate = asn1_x509.Certificate.load(der)
    tbs = certificate["tbs_certificate"]
    tbs["signature"] = {"algorithm": "sha1_ecdsa"}
    signature = ca.intermediate_key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA1()))
    resigned = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": {"algorithm": "sha1_ecdsa"},
            "signature_value": signature,
        }
    )
    return resigned.dump(force=True)


def test_a_sha256_leaf_passes_and_the_same_leaf_signed_with_sha1_is_refused() -> None:
    ca = AppAttestCA.generate()
    verifier = ChainVerifier([ca.root_certificate])
    leaf = _leaf(ca)
    verifier.verify([leaf, ca.intermediate_der], NOW)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify([_resigned_with_sha1(leaf, ca), ca.intermediate_der], NOW)
    assert caught.value.reason == "apple.certificate_chain_invalid"
    assert "sha1" in caught.value.message
