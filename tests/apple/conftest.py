"""Fixtures for the App Attest tests: one throwaway CA per session (key generation is slow)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appintegrity.testing.ios import AppAttestCA

ATTEST_NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def attest_now() -> datetime:
    """The clock of test-kit attestations (the kit and the verifier are both given it)."""
    return ATTEST_NOW


@pytest.fixture(scope="session")
def app_attest_ca() -> AppAttestCA:
    return AppAttestCA.generate(now=ATTEST_NOW)
