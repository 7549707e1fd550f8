"""PlayIntegrityVerifier: local keys end to end, and the path choice."""

from __future__ import annotations

import asyncio

import pytest
from play_support import KEYS, NOW, REQUEST_HASH

from appintegrity.errors import GoogleVerificationError
from appintegrity.google import Decision, PlayIntegrityPolicy, PlayIntegrityVerifier
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice


def test_verify_local_allows_a_genuine_token(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    verifier = PlayIntegrityVerifier(policy, keys=KEYS.as_keys())
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    result = verifier.verify_local(token, now=NOW, request_hash=REQUEST_HASH)
    assert result.decision is Decision.ALLOW
    assert result.verdict.app_integrity.version_code == 42


def test_async_verify_with_local_keys_reports_verdict_failures_as_reasons(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    verifier = PlayIntegrityVerifier(policy, keys=KEYS.as_keys())
    token = device.request_integrity_token(
        request_hash=REQUEST_HASH, now=NOW, licensing="UNLICENSED"
    )
    result = asyncio.run(verifier.verify(token, now=NOW, request_hash=REQUEST_HASH))
    assert (result.decision, result.reasons) == (Decision.BLOCK, ("google.unlicensed",))


def test_token_failures_raise(device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy) -> None:
    verifier = PlayIntegrityVerifier(policy, keys=PlayIntegrityTestKeys.generate().as_keys())
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    with pytest.raises(GoogleVerificationError) as caught:
        verifier.verify_local(token, now=NOW, request_hash=REQUEST_HASH)
    assert caught.value.reason == "google.decryption_failed"


def test_a_verifier_needs_a_way_to_read_tokens(policy: PlayIntegrityPolicy) -> None:
    with pytest.raises(ValueError):
        PlayIntegrityVerifier(policy)
