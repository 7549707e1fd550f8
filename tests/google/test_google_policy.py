"""Policy rules: one test per reason code, per action, and for configuration."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import timedelta

import pytest
from play_support import KEYS, NONCE, NOW, PACKAGE, REQUEST_HASH

from appintegrity.errors import ConfigError
from appintegrity.google import (
    Decision,
    DeviceLevel,
    IntegrityVerdict,
    PlayIntegrityPolicy,
    PolicyResult,
    RuleAction,
    decode_token_locally,
    evaluate_verdict,
)
from appintegrity.testing.android import SoftwareAndroidDevice


def check(
    device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
    *,
    request_hash: str | None = REQUEST_HASH,
    nonce: str | None = None,
    token_hash: str | None = REQUEST_HASH,
    token_nonce: str | None = None,
    **overrides: object,
) -> PolicyResult:
    """Make a real token with the device, read it back, and evaluate it."""
    token = device.request_integrity_token(
        request_hash=token_hash, nonce=token_nonce, now=NOW, **overrides
    )
    verdict = IntegrityVerdict.from_payload(decode_token_locally(token, KEYS.as_keys()))
    return evaluate_verdict(verdict, policy, now=NOW, request_hash=request_hash, nonce=nonce)


def test_genuine_verdict_is_allowed(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    result = check(device, policy)
    assert (result.decision, result.reasons, result.monitored) == (Decision.ALLOW, (), ())
    assert result.allowed


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"request_package_name": "com.evil.app"}, "google.package_mismatch"),
        ({"package_name": "com.evil.app"}, "google.package_mismatch"),
        ({"token_hash": "another-request-hash"}, "google.request_hash_mismatch"),
        ({"token_hash": None}, "google.request_hash_mismatch"),
        ({"age_seconds": 301}, "google.stale"),
        ({"age_seconds": -31}, "google.stale"),
        ({"app_recognition": "UNRECOGNIZED_VERSION"}, "google.app_not_recognized"),
        ({"certificate_digests": ["AAAA" * 10 + "AAA"]}, "google.certificate_mismatch"),
        ({"device_labels": ["MEETS_BASIC_INTEGRITY"]}, "google.device_integrity_insufficient"),
        ({"device_labels": None}, "google.device_integrity_insufficient"),
        ({"device_labels": ["MEETS_VIRTUAL_INTEGRITY"]}, "google.device_integrity_insufficient"),
        ({"licensing": "UNLICENSED"}, "google.unlicensed"),
        ({"licensing": "UNEVALUATED"}, "google.unlicensed"),
        ({"version_code": 39}, "google.version_too_old"),
    ],
)
def test_each_integrity_failure_blocks_with_its_reason(
    device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
    overrides: dict[str, object],
    reason: str,
) -> None:
    result = check(device, policy, **overrides)
    assert result.decision is Decision.BLOCK
    assert result.reasons == (reason,)


def test_nonce_binding_for_classic_requests(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    ok = check(device, policy, request_hash=None, nonce=NONCE, token_hash=None, token_nonce=NONCE)
    assert ok.decision is Decision.ALLOW
    # Play may return the nonce padded / in the other alphabet: the same bytes still match.
    padded = base64.b64encode(base64.urlsafe_b64decode(NONCE + "=")).decode()
    assert check(
        device, policy, request_hash=None, nonce=NONCE, token_hash=None, token_nonce=padded
    ).allowed
    bad = check(
        device,
        policy,
        request_hash=None,
        nonce=NONCE,
        token_hash=None,
        token_nonce=NONCE[:-2] + "AA",
    )
    assert bad.reasons == ("google.nonce_mismatch",)
    missing = check(device, policy, request_hash=None, nonce=NONCE)
    assert missing.reasons == ("google.nonce_mismatch",)


@pytest.mark.parametrize(
    ("binding", "reason"),
    [
        # In the token: JSON text can escape a lone UTF-16 surrogate, which UTF-8 cannot encode.
        ({"token_hash": "\ud800" + REQUEST_HASH[1:]}, "google.request_hash_mismatch"),
        (
            {
                "request_hash": None,
                "nonce": NONCE,
                "token_hash": None,
                "token_nonce": "\ud800" + NONCE[1:],
            },
            "google.nonce_mismatch",
        ),
        # Expected by the caller (a command line argument decoded with surrogateescape).
        ({"request_hash": "\udcff" + REQUEST_HASH[1:]}, "google.request_hash_mismatch"),
    ],
)
def test_lone_surrogate_in_the_binding_is_a_mismatch_not_a_crash(
    device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
    binding: dict[str, str | None],
    reason: str,
) -> None:
    result = check(device, policy, **binding)
    assert (result.decision, result.reasons) == (Decision.BLOCK, (reason,))


def test_binding_must_be_exactly_one(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    with pytest.raises(ValueError):
        check(device, policy, request_hash=None, nonce=None)
    with pytest.raises(ValueError):
        check(device, policy, request_hash=REQUEST_HASH, nonce=NONCE)


def test_freshness_window_edges(device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy) -> None:
    assert check(device, policy, age_seconds=300).allowed
    assert check(device, policy, age_seconds=-30).allowed
    short = dataclasses.replace(policy, max_age_seconds=10, clock_skew_seconds=0)
    assert check(device, short, age_seconds=11).reasons == ("google.stale",)
    assert check(device, short, age_seconds=-1).reasons == ("google.stale",)


def test_numeric_timestamp_is_accepted(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    millis = int((NOW - timedelta(seconds=5)).timestamp() * 1000)
    assert check(device, policy, timestamp_millis=millis).allowed


def test_required_device_levels(device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy) -> None:
    basic = dataclasses.replace(policy, required_device_level=DeviceLevel.BASIC)
    strong = dataclasses.replace(policy, required_device_level=DeviceLevel.STRONG)
    assert check(device, basic, device_labels=["MEETS_BASIC_INTEGRITY"]).allowed
    assert check(device, strong).reasons == ("google.device_integrity_insufficient",)
    all_labels = ["MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY", "MEETS_STRONG_INTEGRITY"]
    assert check(device, strong, device_labels=all_labels).allowed


def test_virtual_integrity_only_when_allowed(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    virtual = dataclasses.replace(policy, allow_virtual=True)
    assert check(device, virtual, device_labels=["MEETS_VIRTUAL_INTEGRITY"]).allowed
    strong_virtual = dataclasses.replace(virtual, required_device_level=DeviceLevel.STRONG)
    assert not check(device, strong_virtual, device_labels=["MEETS_VIRTUAL_INTEGRITY"]).allowed
    with pytest.raises(ConfigError):
        PlayIntegrityPolicy(PACKAGE, required_device_level=DeviceLevel.VIRTUAL)


def test_license_not_required(device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy) -> None:
    lenient = dataclasses.replace(policy, require_license=False)
    assert check(device, lenient, licensing="UNLICENSED").allowed


@pytest.mark.parametrize("verdict", ["POSSIBLE_RISK", "MEDIUM_RISK", "HIGH_RISK", "UNEVALUATED"])
def test_play_protect_risk_limits_by_default(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy, verdict: str
) -> None:
    result = check(device, policy, play_protect=verdict)
    assert (result.decision, result.reasons) == (Decision.LIMIT, ("google.play_protect_risk",))


@pytest.mark.parametrize("verdict", ["NO_ISSUES", "NO_DATA", None])
def test_play_protect_quiet_verdicts_pass(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy, verdict: str | None
) -> None:
    assert check(device, policy, play_protect=verdict).allowed


def test_app_access_risk_limits_on_unknown_capturing_or_controlling_apps(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    for apps in (["UNKNOWN_CAPTURING"], ["KNOWN_INSTALLED", "UNKNOWN_CONTROLLING"]):
        result = check(device, policy, app_access=apps)
        assert (result.decision, result.reasons) == (Decision.LIMIT, ("google.app_access_risk",))
    for apps in (["KNOWN_CAPTURING", "UNKNOWN_INSTALLED"], [], None):
        assert check(device, policy, app_access=apps).allowed


def test_device_activity_is_monitored_not_decisive_by_default(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    for level in ("LEVEL_4", "UNEVALUATED"):
        result = check(device, policy, device_activity=level)
        assert (result.decision, result.reasons) == (Decision.ALLOW, ())
        assert result.monitored == ("google.device_activity_high",)
    assert check(device, policy, device_activity="LEVEL_3").monitored == ()
    off = dataclasses.replace(policy, max_device_activity_level=None)
    assert check(device, off, device_activity="LEVEL_4").monitored == ()


@pytest.mark.parametrize(
    ("reason", "overrides"),
    [
        ("google.play_protect_risk", {"play_protect": "HIGH_RISK"}),
        ("google.app_access_risk", {"app_access": ["UNKNOWN_CAPTURING"]}),
        ("google.device_activity_high", {"device_activity": "LEVEL_4"}),
        ("google.unlicensed", {"licensing": "UNLICENSED"}),
        ("google.device_integrity_insufficient", {"device_labels": None}),
        ("google.app_not_recognized", {"app_recognition": "UNRECOGNIZED_VERSION"}),
        ("google.version_too_old", {"version_code": 1}),
    ],
)
@pytest.mark.parametrize("action", list(RuleAction))
def test_each_rule_costs_its_configured_action(
    device: SoftwareAndroidDevice,
    policy: PlayIntegrityPolicy,
    reason: str,
    overrides: dict[str, object],
    action: RuleAction,
) -> None:
    configured = dataclasses.replace(policy, actions={reason: action})
    result = check(device, configured, **overrides)
    expected = {RuleAction.BLOCK: Decision.BLOCK, RuleAction.LIMIT: Decision.LIMIT}
    assert result.decision is expected.get(action, Decision.ALLOW)
    if action is RuleAction.IGNORE:
        assert (result.reasons, result.monitored) == ((), (reason,))
    else:
        assert (result.reasons, result.monitored) == ((reason,), ())


def test_block_beats_limit_and_reasons_keep_readme_order(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    result = check(
        device, policy, play_protect="HIGH_RISK", licensing="UNLICENSED", request_package_name="x.y"
    )
    assert result.decision is Decision.BLOCK
    assert result.reasons == (
        "google.package_mismatch",
        "google.unlicensed",
        "google.play_protect_risk",
    )


@pytest.mark.parametrize(
    "reason", ["package_mismatch", "google.request_hash_mismatch", "nonce_mismatch", "stale"]
)
def test_binding_package_and_freshness_cannot_be_weakened(reason: str) -> None:
    with pytest.raises(ConfigError):
        PlayIntegrityPolicy(PACKAGE, actions={reason: "limit"})
    PlayIntegrityPolicy(PACKAGE, actions={reason: "block"})


def test_certificate_digest_spellings_are_normalised(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    raw = hashlib.sha256(b"signing certificate").digest()
    play_spelling = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    for configured in (
        raw.hex(),
        raw.hex().upper(),
        ":".join(f"{b:02X}" for b in raw),
        base64.b64encode(raw).decode(),
        play_spelling,
    ):
        spelled = dataclasses.replace(policy, certificate_digests=(configured,))
        assert check(device, spelled, certificate_digests=[play_spelling]).allowed, configured
    with pytest.raises(ConfigError):
        PlayIntegrityPolicy(PACKAGE, certificate_digests=("not a digest!",))


@pytest.mark.parametrize(
    "configured",
    [
        hashlib.sha1(b"signing certificate").hexdigest(),  # keytool prints it next to SHA-256
        ":".join(f"{b:02X}" for b in hashlib.sha1(b"signing certificate").digest()),
        base64.b64encode(hashlib.sha1(b"signing certificate").digest()).decode(),
        base64.urlsafe_b64encode(bytes(31)).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(bytes(33)).rstrip(b"=").decode(),
        (bytes(33)).hex(),
    ],
)
def test_certificate_digest_that_is_not_32_bytes_is_refused(configured: str) -> None:
    with pytest.raises(ConfigError, match="SHA-256"):
        PlayIntegrityPolicy(PACKAGE, certificate_digests=(configured,))
    with pytest.raises(ConfigError, match="SHA-256"):
        PlayIntegrityPolicy.from_mapping(
            {"package_name": PACKAGE, "certificate_digests": [configured]}
        )


def test_empty_certificate_list_skips_the_check(
    device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy
) -> None:
    open_policy = dataclasses.replace(policy, certificate_digests=())
    assert check(device, open_policy, certificate_digests=["AAAA"]).allowed


def test_policy_from_toml_table() -> None:
    policy = PlayIntegrityPolicy.from_mapping(
        {
            "package_name": PACKAGE,
            "certificate_digests": ["ab" * 32],
            "min_version_code": 7,
            "required_device_level": "strong",
            "allow_virtual": True,
            "require_license": False,
            "play_protect_risky": ["HIGH_RISK"],
            "app_access_risky": ["UNKNOWN_OVERLAYS"],
            "max_device_activity_level": "LEVEL_2",
            "max_age_seconds": 60,
            "clock_skew_seconds": 5,
            "actions": {"play_protect_risk": "block", "google.device_activity_high": "limit"},
        }
    )
    assert policy.required_device_level is DeviceLevel.STRONG
    assert policy.digest_set == {bytes.fromhex("ab" * 32)}
    assert policy.play_protect_risky == {"HIGH_RISK"}
    assert policy.actions["google.play_protect_risk"] is RuleAction.BLOCK
    assert policy.actions["google.device_activity_high"] is RuleAction.LIMIT
    assert policy.actions["google.app_access_risk"] is RuleAction.LIMIT


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"package_name": PACKAGE, "unknown_key": 1},
        {"package_name": PACKAGE, "max_age_seconds": "300"},
        {"package_name": PACKAGE, "max_age_seconds": -1},
        {"package_name": PACKAGE, "require_license": "yes"},
        {"package_name": PACKAGE, "required_device_level": "ultra"},
        {"package_name": PACKAGE, "certificate_digests": "ab"},
        {"package_name": PACKAGE, "max_device_activity_level": "LEVEL_9"},
        {"package_name": PACKAGE, "actions": {"google.made_up": "block"}},
        {"package_name": PACKAGE, "actions": {"play_protect_risk": "shrug"}},
        {"package_name": PACKAGE, "actions": "block"},
    ],
)
def test_bad_policy_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PlayIntegrityPolicy.from_mapping(config)


def test_naive_now_is_a_misuse(device: SoftwareAndroidDevice, policy: PlayIntegrityPolicy) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    verdict = IntegrityVerdict.from_payload(decode_token_locally(token, KEYS.as_keys()))
    with pytest.raises(ValueError):
        evaluate_verdict(verdict, policy, now=NOW.replace(tzinfo=None), request_hash=REQUEST_HASH)
