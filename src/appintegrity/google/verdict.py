"""The Play Integrity verdict payload as typed, frozen values.

Every documented field is read strictly (a wrong type is ``google.malformed``); fields Google adds
later are kept, never fatal: each section's ``extra`` holds the keys it does not model, and
``IntegrityVerdict.raw`` the whole payload. Absent sections and verdicts read as ``UNEVALUATED``,
which never passes a policy check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from appintegrity.errors import GoogleVerificationError, Reason

__all__ = [
    "UNEVALUATED",
    "AccountDetails",
    "AppAccessRisk",
    "AppIntegrity",
    "DeviceIntegrity",
    "DeviceLevel",
    "EnvironmentDetails",
    "IntegrityVerdict",
    "RequestDetails",
    "TestingDetails",
]

UNEVALUATED = "UNEVALUATED"
_EMPTY: Mapping[str, object] = MappingProxyType({})


def _empty() -> Mapping[str, object]:
    return _EMPTY


_MAX_TIMESTAMP_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class DeviceLevel(StrEnum):
    """Device integrity levels, weakest first (``VIRTUAL``: Google Play Games for PC emulators)."""

    BASIC = "basic"
    DEVICE = "device"
    STRONG = "strong"
    VIRTUAL = "virtual"


# The labels that satisfy each physical level (a stronger label implies the weaker ones, and
# Google only reports BASIC / STRONG to apps that opted in to them).
LEVEL_LABELS: Mapping[DeviceLevel, frozenset[str]] = MappingProxyType(
    {
        DeviceLevel.BASIC: frozenset(
            {"MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY", "MEETS_STRONG_INTEGRITY"}
        ),
        DeviceLevel.DEVICE: frozenset({"MEETS_DEVICE_INTEGRITY", "MEETS_STRONG_INTEGRITY"}),
        DeviceLevel.STRONG: frozenset({"MEETS_STRONG_INTEGRITY"}),
        DeviceLevel.VIRTUAL: frozenset({"MEETS_VIRTUAL_INTEGRITY"}),
    }
)


def _malformed(message: str) -> GoogleVerificationError:
    return GoogleVerificationError(
        Reason.GOOGLE_MALFORMED, f"not a Play Integrity verdict: {message}"
    )


def _section(
    payload: Mapping[str, object], name: str, required: bool = False
) -> Mapping[str, object]:
    value = payload.get(name)
    if value is None:
        if required:
            raise _malformed(f"{name} is missing")
        return _EMPTY
    if not isinstance(value, Mapping):
        raise _malformed(f"{name} must be an object")
    return value


def _text(section: Mapping[str, object], path: str, name: str) -> str | None:
    value = section.get(name)
    if value is None or type(value) is str or isinstance(value, str):
        return str(value) if value is not None else None
    raise _malformed(f"{path}.{name} must be a string")


def _integer(section: Mapping[str, object], path: str, name: str) -> int | None:
    """An int64 that Google spells as a decimal string in JSON (or, on some paths, a number)."""
    value = section.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    raise _malformed(f"{path}.{name} must be an integer or a decimal string")


def _texts(section: Mapping[str, object], path: str, name: str) -> tuple[str, ...] | None:
    value = section.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        result = tuple(value)
        if all(type(item) is str or isinstance(item, str) for item in result):
            return result
    raise _malformed(f"{path}.{name} must be a list of strings")


def _mapping(section: Mapping[str, object], path: str, name: str) -> Mapping[str, object] | None:
    value = section.get(name)
    if value is None or isinstance(value, Mapping):
        return value
    raise _malformed(f"{path}.{name} must be an object")


def _extra(section: Mapping[str, object], known: frozenset[str]) -> Mapping[str, object]:
    if known.issuperset(section):
        return _EMPTY
    return MappingProxyType({k: v for k, v in section.items() if k not in known})


@dataclass(frozen=True)
class RequestDetails:
    """``requestDetails``: what the app asked for, and when Google answered."""

    request_package_name: str
    timestamp_millis: int
    request_hash: str | None = None
    nonce: str | None = None
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    _KNOWN = frozenset({"requestPackageName", "timestampMillis", "requestHash", "nonce"})

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_millis / 1000, tz=UTC)

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> RequestDetails:
        package = _text(section, "requestDetails", "requestPackageName")
        timestamp = _integer(section, "requestDetails", "timestampMillis")
        if package is None or timestamp is None:
            raise _malformed("requestDetails needs requestPackageName and timestampMillis")
        # Both bounds: a verdict that reads must also print (``timestamp``, ``summary``).
        if not 0 <= timestamp <= _MAX_TIMESTAMP_MILLIS:
            raise _malformed("requestDetails.timestampMillis is outside the years 1970 to 9999")
        return cls(
            request_package_name=package,
            timestamp_millis=timestamp,
            request_hash=_text(section, "requestDetails", "requestHash"),
            nonce=_text(section, "requestDetails", "nonce"),
            extra=_extra(section, cls._KNOWN),
        )


@dataclass(frozen=True)
class AppIntegrity:
    """``appIntegrity``; the package, digests and version are present only when evaluated."""

    app_recognition_verdict: str = UNEVALUATED
    package_name: str | None = None
    certificate_sha256_digest: tuple[str, ...] = ()
    version_code: int | None = None
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    _KNOWN = frozenset(
        {"appRecognitionVerdict", "packageName", "certificateSha256Digest", "versionCode"}
    )

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> AppIntegrity:
        path = "appIntegrity"
        return cls(
            app_recognition_verdict=_text(section, path, "appRecognitionVerdict") or UNEVALUATED,
            package_name=_text(section, path, "packageName"),
            certificate_sha256_digest=_texts(section, path, "certificateSha256Digest") or (),
            version_code=_integer(section, path, "versionCode"),
            extra=_extra(section, cls._KNOWN),
        )


@dataclass(frozen=True)
class DeviceIntegrity:
    """``deviceIntegrity``: the labels are absent (empty here) when none applies."""

    device_recognition_verdict: tuple[str, ...] = ()
    legacy_device_recognition_verdict: tuple[str, ...] | None = None
    device_activity_level: str | None = None
    device_attributes: Mapping[str, object] = field(default_factory=_empty, compare=False)
    device_recall: Mapping[str, object] | None = field(default=None, compare=False)
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    _KNOWN = frozenset(
        {
            "deviceRecognitionVerdict",
            "legacyDeviceRecognitionVerdict",
            "recentDeviceActivity",
            "deviceAttributes",
            "deviceRecall",
        }
    )

    @property
    def sdk_version(self) -> int | None:
        value = self.device_attributes.get("sdkVersion")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def meets(self, level: DeviceLevel) -> bool:
        """Whether a label of ``level`` (or a stronger physical one) is present."""
        return not LEVEL_LABELS[level].isdisjoint(self.device_recognition_verdict)

    @property
    def level(self) -> DeviceLevel | None:
        """The strongest level met, ``None`` when no label applies."""
        for level in (DeviceLevel.STRONG, DeviceLevel.DEVICE, DeviceLevel.BASIC):
            if self.meets(level):
                return level
        return DeviceLevel.VIRTUAL if self.meets(DeviceLevel.VIRTUAL) else None

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> DeviceIntegrity:
        path = "deviceIntegrity"
        activity = _mapping(section, path, "recentDeviceActivity")
        level = (
            _text(activity, f"{path}.recentDeviceActivity", "deviceActivityLevel")
            if activity is not None
            else None
        )
        return cls(
            device_recognition_verdict=_texts(section, path, "deviceRecognitionVerdict") or (),
            legacy_device_recognition_verdict=_texts(
                section, path, "legacyDeviceRecognitionVerdict"
            ),
            device_activity_level=level,
            device_attributes=_mapping(section, path, "deviceAttributes") or _EMPTY,
            device_recall=_mapping(section, path, "deviceRecall"),
            extra=_extra(section, cls._KNOWN),
        )


@dataclass(frozen=True)
class AccountDetails:
    """``accountDetails``: whether the user got the app from Play (``LICENSED``)."""

    app_licensing_verdict: str = UNEVALUATED
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> AccountDetails:
        return cls(
            app_licensing_verdict=_text(section, "accountDetails", "appLicensingVerdict")
            or UNEVALUATED,
            extra=_extra(section, frozenset({"appLicensingVerdict"})),
        )


@dataclass(frozen=True)
class AppAccessRisk:
    """``appAccessRiskVerdict``; older ``playOrSystemApps``/``otherApps`` stay in ``extra``."""

    apps_detected: tuple[str, ...] = ()
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> AppAccessRisk:
        path = "environmentDetails.appAccessRiskVerdict"
        return cls(
            apps_detected=_texts(section, path, "appsDetected") or (),
            extra=_extra(section, frozenset({"appsDetected"})),
        )


@dataclass(frozen=True)
class EnvironmentDetails:
    """``environmentDetails``: opt-in signals, ``None`` when the app did not ask for them."""

    play_protect_verdict: str | None = None
    app_access_risk: AppAccessRisk | None = None
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> EnvironmentDetails:
        path = "environmentDetails"
        risk = _mapping(section, path, "appAccessRiskVerdict")
        return cls(
            play_protect_verdict=_text(section, path, "playProtectVerdict"),
            app_access_risk=AppAccessRisk.from_payload(risk) if risk is not None else None,
            extra=_extra(section, frozenset({"playProtectVerdict", "appAccessRiskVerdict"})),
        )


@dataclass(frozen=True)
class TestingDetails:
    """``testingDetails``: present on responses made for license testers."""

    is_testing_response: bool = False
    extra: Mapping[str, object] = field(default_factory=_empty, compare=False)

    @classmethod
    def from_payload(cls, section: Mapping[str, object]) -> TestingDetails:
        value = section.get("isTestingResponse", False)
        if not isinstance(value, bool):
            raise _malformed("testingDetails.isTestingResponse must be a boolean")
        return cls(
            is_testing_response=value, extra=_extra(section, frozenset({"isTestingResponse"}))
        )


_KNOWN_SECTIONS = frozenset(
    {
        "requestDetails",
        "appIntegrity",
        "deviceIntegrity",
        "accountDetails",
        "environmentDetails",
        "testingDetails",
    }
)


@dataclass(frozen=True)
class IntegrityVerdict:
    """The whole decrypted payload (``tokenPayloadExternal`` when decoded by Google)."""

    request_details: RequestDetails
    app_integrity: AppIntegrity
    device_integrity: DeviceIntegrity
    account_details: AccountDetails
    environment_details: EnvironmentDetails
    testing_details: TestingDetails | None
    raw: Mapping[str, object] = field(compare=False, repr=False)

    @property
    def extra(self) -> Mapping[str, object]:
        """Top-level sections this model does not know (kept, never fatal)."""
        return _extra(self.raw, _KNOWN_SECTIONS)

    @classmethod
    def from_payload(cls, payload: Mapping[str, object]) -> IntegrityVerdict:
        """Type a payload; ``google.malformed`` when it is not a verdict."""
        if not isinstance(payload, Mapping):
            raise _malformed("the payload must be a JSON object")
        testing = _section(payload, "testingDetails")
        return cls(
            request_details=RequestDetails.from_payload(
                _section(payload, "requestDetails", required=True)
            ),
            app_integrity=AppIntegrity.from_payload(_section(payload, "appIntegrity")),
            device_integrity=DeviceIntegrity.from_payload(_section(payload, "deviceIntegrity")),
            account_details=AccountDetails.from_payload(_section(payload, "accountDetails")),
            environment_details=EnvironmentDetails.from_payload(
                _section(payload, "environmentDetails")
            ),
            testing_details=TestingDetails.from_payload(testing) if testing else None,
            raw=payload,
        )

    def summary(self) -> dict[str, object]:
        """A compact, JSON-ready view for logs, the CLI and vector conclusions."""
        request = self.request_details
        environment = self.environment_details
        return {
            "request_package_name": request.request_package_name,
            "timestamp": request.timestamp.isoformat().replace("+00:00", "Z"),
            "request_hash": request.request_hash,
            "nonce": request.nonce,
            "app_recognition_verdict": self.app_integrity.app_recognition_verdict,
            "package_name": self.app_integrity.package_name,
            "certificate_sha256_digest": list(self.app_integrity.certificate_sha256_digest),
            "version_code": self.app_integrity.version_code,
            "device_recognition_verdict": list(self.device_integrity.device_recognition_verdict),
            "device_activity_level": self.device_integrity.device_activity_level,
            "app_licensing_verdict": self.account_details.app_licensing_verdict,
            "play_protect_verdict": environment.play_protect_verdict,
            "apps_detected": (
                list(environment.app_access_risk.apps_detected)
                if environment.app_access_risk is not None
                else None
            ),
            "is_testing_response": (
                self.testing_details.is_testing_response if self.testing_details else False
            ),
        }
