"""Fixtures for the Play Integrity tests: a software device and the policy that accepts it."""

from __future__ import annotations

import pytest
from play_support import KEYS, PACKAGE

from appintegrity.google import PlayIntegrityPolicy
from appintegrity.testing.android import SoftwareAndroidDevice


@pytest.fixture
def device() -> SoftwareAndroidDevice:
    return SoftwareAndroidDevice(PACKAGE, keys=KEYS, version_code=42)


@pytest.fixture
def policy(device: SoftwareAndroidDevice) -> PlayIntegrityPolicy:
    return PlayIntegrityPolicy(
        package_name=PACKAGE, certificate_digests=(device.certificate_digest,), min_version_code=40
    )
