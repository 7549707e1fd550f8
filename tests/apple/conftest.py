"""Fixtures for the App Attest tests: one throwaway CA per session (key generation is slow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appintegrity.testing.ios import AppAttestCA

ATTEST_NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def attest_now() -> datetime:
    """The clock of test-kit attestations (the kit and the verifier are both given it)."""
    return ATTEST_NOW


@pytest.fixture(scope="session")
def app_attest_ca() -> AppAttestCA:
    return AppAttestCA.generate(now=ATTEST_NOW)


def attested_certificate_der(key: ec.EllipticCurvePrivateKey, now: datetime) -> bytes:
    """A self-signed certificate holding ``key``, for a receipt's field 3 (only its key is read)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attested key")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
