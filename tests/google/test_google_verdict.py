"""The typed verdict: real payloads parse, unknown fields are kept, wrong types are malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from play_support import NOW

from appintegrity.errors import GoogleVerificationError
from appintegrity.google import (
    Decision,
    DeviceLevel,
    IntegrityVerdict,
    PlayIntegrityPolicy,
    evaluate_verdict,
)
from appintegrity.testing.android import SoftwareAndroidDevice


def load(vectors_dir: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((vectors_dir / "play-integrity" / name).read_text())
    return data


def test_real_standard_payload_with_all_signals_parses(vectors_dir: Path) -> None:
    verdict = IntegrityVerdict.from_payload(load(vectors_dir, "verdict-standard-all-signals.json"))
    assert verdict.request_details.request_package_name == "com.package.name"
    assert verdict.request_details.request_hash == "aGVsbG8gd29scmQgdGhlcmU"
    assert verdict.request_details.timestamp_millis == 1675655009345
    assert verdict.app_integrity.app_recognition_verdict == "PLAY_RECOGNIZED"
    assert verdict.app_integrity.version_code == 42
    assert verdict.app_integrity.certificate_sha256_digest == ("6a6a1474b5cbbb2b1aa57e0bc3",)
    assert verdict.device_integrity.level is DeviceLevel.STRONG
    assert verdict.device_integrity.device_activity_level == "LEVEL_2"
    assert verdict.device_integrity.sdk_version == 33
    assert verdict.device_integrity.device_recall is not None
    assert verdict.account_details.app_licensing_verdict == "LICENSED"
    assert verdict.environment_details.play_protect_verdict == "NO_ISSUES"
    assert verdict.environment_details.app_access_risk is not None
    assert "UNKNOWN_CAPTURING" in verdict.environment_details.app_access_risk.apps_detected


def test_real_standard_payload_evaluates_to_limit_for_its_capturing_app(vectors_dir: Path) -> None:
    verdict = IntegrityVerdict.from_payload(load(vectors_dir, "verdict-standard-all-signals.json"))
    # Google's sample carries a placeholder digest (13 bytes), not a SHA-256 a policy could list:
    # the certificate check is left out.
    policy = PlayIntegrityPolicy("com.package.name", max_age_seconds=10**9)
    result = evaluate_verdict(
        verdict,
        policy,
        now=verdict.request_details.timestamp,
        request_hash="aGVsbG8gd29scmQgdGhlcmU",
    )
    assert result.decision is Decision.LIMIT
    assert result.reasons == ("google.app_access_risk",)


def test_real_nothing_evaluated_payload_never_allows(vectors_dir: Path) -> None:
    payload = load(vectors_dir, "verdict-classic-nothing-evaluated.json")
    verdict = IntegrityVerdict.from_payload(payload)
    assert verdict.device_integrity.device_recognition_verdict == ()
    assert verdict.device_integrity.level is None
    assert verdict.app_integrity.package_name is None
    # The most lenient policy still refuses: UNEVALUATED never passes.
    policy = PlayIntegrityPolicy(
        "gr.nikolasspyr.integritycheck",
        required_device_level=DeviceLevel.BASIC,
        allow_virtual=True,
        require_license=False,
        max_age_seconds=10**9,
    )
    result = evaluate_verdict(
        verdict,
        policy,
        now=verdict.request_details.timestamp,
        # Play handed the nonce back padded: the comparison is of the decoded bytes.
        nonce="9olMPivB9TxnGBeCIj1852JJ3ZH4bUZW9XqM0r5gUZPqsqP2SQ",
    )
    assert result.decision is Decision.BLOCK
    assert result.reasons == (
        "google.app_not_recognized",
        "google.device_integrity_insufficient",
        "google.play_protect_risk",
    )
    assert result.monitored == ("google.device_activity_high",)


def test_unknown_fields_are_kept_not_fatal() -> None:
    payload = {
        "requestDetails": {"requestPackageName": "p", "timestampMillis": 1, "newField": 1},
        "appIntegrity": {"appRecognitionVerdict": "PLAY_RECOGNIZED", "futureSignal": "x"},
        "environmentDetails": {"appAccessRiskVerdict": {"playOrSystemApps": ["A"]}},
        "brandNewSection": {"k": "v"},
    }
    verdict = IntegrityVerdict.from_payload(payload)
    assert verdict.request_details.extra == {"newField": 1}
    assert verdict.app_integrity.extra == {"futureSignal": "x"}
    assert verdict.environment_details.app_access_risk is not None
    assert verdict.environment_details.app_access_risk.extra == {"playOrSystemApps": ["A"]}
    assert verdict.extra == {"brandNewSection": {"k": "v"}}
    assert verdict.raw is payload


def test_timestamp_as_number_or_string() -> None:
    for value in (1675655009345, "1675655009345"):
        payload = {"requestDetails": {"requestPackageName": "p", "timestampMillis": value}}
        assert (
            IntegrityVerdict.from_payload(payload).request_details.timestamp_millis == 1675655009345
        )


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"requestDetails": "x"},
        {"requestDetails": {"requestPackageName": "p"}},
        {"requestDetails": {"requestPackageName": "p", "timestampMillis": "12a"}},
        {"requestDetails": {"requestPackageName": "p", "timestampMillis": True}},
        {"requestDetails": {"requestPackageName": "p", "timestampMillis": 10**18}},
        {"requestDetails": {"requestPackageName": 5, "timestampMillis": 1}},
        {"requestDetails": {"requestPackageName": "p", "timestampMillis": 1}, "appIntegrity": []},
        {
            "requestDetails": {"requestPackageName": "p", "timestampMillis": 1},
            "deviceIntegrity": {"deviceRecognitionVerdict": "MEETS_DEVICE_INTEGRITY"},
        },
        {
            "requestDetails": {"requestPackageName": "p", "timestampMillis": 1},
            "testingDetails": {"isTestingResponse": "yes"},
        },
    ],
)
def test_payloads_that_are_not_verdicts_are_malformed(payload: dict[str, object]) -> None:
    with pytest.raises(GoogleVerificationError) as caught:
        IntegrityVerdict.from_payload(payload)
    assert caught.value.reason == "google.malformed"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_sections = st.sampled_from(
    ["requestDetails", "appIntegrity", "deviceIntegrity", "accountDetails", "environmentDetails",
     "testingDetails", "requestPackageName", "timestampMillis", "deviceRecognitionVerdict",
     "appsDetected", "appAccessRiskVerdict", "recentDeviceActivity"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_sections, st.dictionaries(_sections, _json, max_size=4) | _json, max_size=6)
)
def test_arbitrary_json_is_a_verdict_or_malformed(payload: dict[str, object]) -> None:
    try:
        verdict = IntegrityVerdict.from_payload(payload)
    except GoogleVerificationError as exc:
        assert exc.reason == "google.malformed"
    else:
        verdict.summary()
        result = evaluate_verdict(verdict, PlayIntegrityPolicy("p"), now=NOW, nonce="x" * 16)
        assert result.decision is Decision.BLOCK  # arbitrary JSON never earns an allow


def _nulls(value: object, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in _nulls(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [n for index, item in enumerate(value) for n in _nulls(item, f"{path}[{index}]")]
    return []


@pytest.mark.parametrize(
    ("override", "section", "field"),
    [
        ("licensing", "accountDetails", "appLicensingVerdict"),
        ("timestamp_millis", "requestDetails", "timestampMillis"),
        ("request_package_name", "requestDetails", "requestPackageName"),
        ("package_name", "appIntegrity", "packageName"),
        ("version_code", "appIntegrity", "versionCode"),
        ("certificate_digests", "appIntegrity", "certificateSha256Digest"),
        ("device_labels", "deviceIntegrity", "deviceRecognitionVerdict"),
        ("play_protect", "environmentDetails", "playProtectVerdict"),
    ],
)
def test_kit_none_override_leaves_the_field_out(override: str, section: str, field: str) -> None:
    device = SoftwareAndroidDevice("com.example.app")
    payload = device.verdict_payload(request_hash="h", now=NOW, **{override: None})
    assert field not in payload[section]  # type: ignore[operator]
    assert _nulls(payload) == []


def test_verdict_without_a_licensing_verdict_reads_as_unevaluated() -> None:
    payload = SoftwareAndroidDevice("com.example.app").verdict_payload(
        request_hash="h", now=NOW, licensing=None
    )
    verdict = IntegrityVerdict.from_payload(payload)
    assert verdict.account_details.app_licensing_verdict == "UNEVALUATED"
