"""What an app accepts from a Play Integrity verdict, and the pure function that applies it.

Each failed rule yields a stable reason code (``google.*``, in the order of the vectors README) and
costs what the policy's ``actions`` say: ``block``, ``limit``, or ``ignore``. ``ignore`` is monitor
mode: the reason is recorded in ``PolicyResult.monitored`` (for metrics and logs) but does not
change the decision. The decision is the worst cost: block beats limit beats allow.

Defaults follow Google's guidance and field experience: integrity failures block; Play Protect and
app-access risks limit (refusing on ``HIGH_RISK`` alone blocked ~14 % of one deployment's devices);
high device activity is monitored only. The request binding, package name and freshness checks
cannot be weakened: without them a verdict proves nothing about this request.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from appintegrity.encoding import EncodingError, b64decode_lenient, b64url_encode
from appintegrity.errors import ConfigError, Reason
from appintegrity.google.verdict import UNEVALUATED, DeviceLevel, IntegrityVerdict

__all__ = [
    "DEFAULT_ACTIONS",
    "DEFAULT_APP_ACCESS_RISKY",
    "DEFAULT_PLAY_PROTECT_RISKY",
    "Decision",
    "PlayIntegrityPolicy",
    "PolicyResult",
    "RuleAction",
    "evaluate_verdict",
    "normalize_certificate_digest",
]


class Decision(StrEnum):
    ALLOW = "allow"
    LIMIT = "limit"
    BLOCK = "block"


class RuleAction(StrEnum):
    """What a failed rule costs; ``IGNORE`` records it as monitored, decision unchanged."""

    BLOCK = "block"
    LIMIT = "limit"
    IGNORE = "ignore"


# Verdict reasons in evaluation (and reporting) order: the README's order, then the extra rules.
VERDICT_REASONS: tuple[Reason, ...] = (
    Reason.GOOGLE_PACKAGE_MISMATCH,
    Reason.GOOGLE_REQUEST_HASH_MISMATCH,
    Reason.GOOGLE_NONCE_MISMATCH,
    Reason.GOOGLE_STALE,
    Reason.GOOGLE_APP_NOT_RECOGNIZED,
    Reason.GOOGLE_CERTIFICATE_MISMATCH,
    Reason.GOOGLE_DEVICE_INTEGRITY_INSUFFICIENT,
    Reason.GOOGLE_UNLICENSED,
    Reason.GOOGLE_VERSION_TOO_OLD,
    Reason.GOOGLE_PLAY_PROTECT_RISK,
    Reason.GOOGLE_APP_ACCESS_RISK,
    Reason.GOOGLE_DEVICE_ACTIVITY_HIGH,
)
_ORDER = {reason: index for index, reason in enumerate(VERDICT_REASONS)}

# Without these a verdict is not about this request at all: they always block.
_ALWAYS_BLOCK = frozenset(
    {
        Reason.GOOGLE_PACKAGE_MISMATCH,
        Reason.GOOGLE_REQUEST_HASH_MISMATCH,
        Reason.GOOGLE_NONCE_MISMATCH,
        Reason.GOOGLE_STALE,
    }
)

DEFAULT_ACTIONS: Mapping[Reason, RuleAction] = MappingProxyType(
    {
        **{reason: RuleAction.BLOCK for reason in VERDICT_REASONS},
        Reason.GOOGLE_PLAY_PROTECT_RISK: RuleAction.LIMIT,
        Reason.GOOGLE_APP_ACCESS_RISK: RuleAction.LIMIT,
        Reason.GOOGLE_DEVICE_ACTIVITY_HIGH: RuleAction.IGNORE,
    }
)
# NO_DATA (Play Protect on, nothing scanned yet) is not a risk; UNEVALUATED never passes.
DEFAULT_PLAY_PROTECT_RISKY = frozenset({"POSSIBLE_RISK", "MEDIUM_RISK", "HIGH_RISK", UNEVALUATED})
# Unknown apps that can read the screen or drive the UI; known (Play/system) apps are trusted.
DEFAULT_APP_ACCESS_RISKY = frozenset({"UNKNOWN_CAPTURING", "UNKNOWN_CONTROLLING"})
_ACTIVITY_LEVELS = {"LEVEL_1": 1, "LEVEL_2": 2, "LEVEL_3": 3, "LEVEL_4": 4}
_SHA256_SIZE = 32
_HEX_DIGEST = re.compile(r"\A[0-9a-fA-F]{64}\Z")
_COLON_HEX_DIGEST = re.compile(r"\A[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){31}\Z")
_ANY_HEX = re.compile(r"\A(?:[0-9a-fA-F]{2}:)*[0-9a-fA-F]+\Z")


def normalize_certificate_digest(value: str) -> bytes:
    """Raw SHA-256 digest bytes from hex (``keytool``'s colon form too) or base64 in either
    alphabet.

    Play reports URL-safe base64 without padding; consoles and keytool show hex. Raises
    ``EncodingError`` for anything else, including a digest that is not 32 bytes (a SHA-1, say:
    keytool prints it next to the SHA-256, and it could never match).
    """
    text = value.strip()
    if _HEX_DIGEST.match(text):
        return bytes.fromhex(text)
    if _COLON_HEX_DIGEST.match(text):
        return bytes.fromhex(text.replace(":", ""))
    try:
        digest = b64decode_lenient(text)
        if len(digest) == _SHA256_SIZE:
            return digest
        problem = f"a SHA-256 is {_SHA256_SIZE} bytes, found {len(digest)}"
    except EncodingError as exc:
        problem = str(exc)
    if _ANY_HEX.match(text):  # hex of another length: a SHA-1 from keytool, a truncated paste
        digits = len(text.replace(":", ""))
        hint = " (40 is a SHA-1)" if digits == 40 else ""
        problem = f"a SHA-256 in hex has 64 digits, found {digits}{hint}"
    raise EncodingError(problem)


def _reason(name: object) -> Reason:
    text = str(name)
    for candidate in (text, f"google.{text}"):
        try:
            reason = Reason(candidate)
        except ValueError:
            continue
        if reason in _ORDER:
            return reason
    raise ConfigError(f"unknown Play Integrity rule {text!r} in actions")


def _action(name: object) -> RuleAction:
    try:
        return RuleAction(str(name))
    except ValueError:
        raise ConfigError(f"unknown action {name!r}: expected block, limit or ignore") from None


@dataclass(frozen=True)
class PlayIntegrityPolicy:
    """One app's rules. Empty ``certificate_digests`` skips the certificate check.

    ``max_age_seconds`` bounds how old ``timestampMillis`` may be; ``clock_skew_seconds`` how far in
    the future it may be (our clock against Google's). ``actions`` overrides the default cost of a
    rule by reason code (``"google.play_protect_risk"`` or ``"play_protect_risk"``).
    """

    package_name: str
    certificate_digests: tuple[str, ...] = ()
    min_version_code: int | None = None
    required_device_level: DeviceLevel = DeviceLevel.DEVICE
    allow_virtual: bool = False
    require_license: bool = True
    play_protect_risky: frozenset[str] = DEFAULT_PLAY_PROTECT_RISKY
    app_access_risky: frozenset[str] = DEFAULT_APP_ACCESS_RISKY
    max_device_activity_level: str | None = "LEVEL_3"
    max_age_seconds: int = 300
    clock_skew_seconds: int = 30
    actions: Mapping[str, RuleAction] = field(default_factory=dict)
    digest_set: frozenset[bytes] = field(init=False, repr=False, compare=False)

    CONFIG_KEYS = frozenset(
        {
            "package_name",
            "certificate_digests",
            "min_version_code",
            "required_device_level",
            "allow_virtual",
            "require_license",
            "play_protect_risky",
            "app_access_risky",
            "max_device_activity_level",
            "max_age_seconds",
            "clock_skew_seconds",
            "actions",
        }
    )

    def __post_init__(self) -> None:
        if not self.package_name or not isinstance(self.package_name, str):
            raise ConfigError("package_name is required")
        try:
            level = DeviceLevel(self.required_device_level)
        except ValueError:
            raise ConfigError(
                f"required_device_level must be basic, device or strong, "
                f"found {self.required_device_level!r}"
            ) from None
        if level is DeviceLevel.VIRTUAL:
            raise ConfigError("required_device_level cannot be virtual: set allow_virtual instead")
        object.__setattr__(self, "required_device_level", level)
        digests: set[bytes] = set()
        for digest in self.certificate_digests:
            try:
                digests.add(normalize_certificate_digest(digest))
            except (EncodingError, AttributeError) as exc:
                raise ConfigError(
                    f"certificate digest {digest!r} is not a SHA-256 (32 bytes, in hex or base64):"
                    f" {exc}"
                ) from exc
        object.__setattr__(self, "certificate_digests", tuple(self.certificate_digests))
        object.__setattr__(self, "digest_set", frozenset(digests))
        object.__setattr__(self, "play_protect_risky", frozenset(self.play_protect_risky))
        object.__setattr__(self, "app_access_risky", frozenset(self.app_access_risky))
        if (
            self.max_device_activity_level is not None
            and self.max_device_activity_level not in _ACTIVITY_LEVELS
        ):
            raise ConfigError("max_device_activity_level must be LEVEL_1 … LEVEL_4 or absent")
        for name in ("max_age_seconds", "clock_skew_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer")
        actions: dict[Reason, RuleAction] = dict(DEFAULT_ACTIONS)
        for name, action in self.actions.items():
            reason, cost = _reason(name), _action(action)
            if reason in _ALWAYS_BLOCK and cost is not RuleAction.BLOCK:
                raise ConfigError(f"{reason} always blocks: it cannot be set to {cost}")
            actions[reason] = cost
        object.__setattr__(self, "actions", MappingProxyType(actions))

    def action(self, reason: Reason) -> RuleAction:
        return self.actions[reason]

    @classmethod
    def from_mapping(cls, config: Mapping[str, object]) -> PlayIntegrityPolicy:
        """Build from a configuration table (TOML ``[[apps]]``); unknown keys: ``ConfigError``."""
        unknown = sorted(set(config) - cls.CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"unknown Play Integrity policy keys: {', '.join(unknown)}")
        kwargs: dict[str, object] = {}
        for name, value in config.items():
            if name in ("package_name", "required_device_level"):
                kwargs[name] = _expect(name, value, str)
            elif name == "max_device_activity_level":
                kwargs[name] = None if value is None else _expect(name, value, str)
            elif name in ("allow_virtual", "require_license"):
                kwargs[name] = _expect(name, value, bool)
            elif name in ("max_age_seconds", "clock_skew_seconds"):
                kwargs[name] = _integer(name, value)
            elif name == "min_version_code":
                kwargs[name] = None if value is None else _integer(name, value)
            elif name == "certificate_digests":
                kwargs[name] = tuple(_strings(name, value))
            elif name in ("play_protect_risky", "app_access_risky"):
                kwargs[name] = frozenset(_strings(name, value))
            else:  # actions
                if not isinstance(value, Mapping):
                    raise ConfigError("actions must be a table of rule = action")
                kwargs[name] = dict(value)
        if "package_name" not in kwargs:
            raise ConfigError("package_name is required")
        return cls(**kwargs)  # type: ignore[arg-type]


def _expect(name: str, value: object, kind: type) -> object:
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}")
    return value


def _integer(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer")
    return value


def _strings(name: str, value: object) -> Iterable[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{name} must be a list of strings")
    return value


@dataclass(frozen=True)
class PolicyResult:
    """The decision, the reasons that cost something (in order), and the verdict read."""

    decision: Decision
    reasons: tuple[str, ...]
    verdict: IntegrityVerdict
    monitored: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


def _same_text(found: str | None, expected: str) -> bool:
    if found is None:
        return False
    # JSON may carry a lone surrogate (``"\\ud800"``), which strict UTF-8 cannot encode;
    # ``surrogatepass`` still maps distinct strings to distinct bytes: a mismatch, not a crash.
    return hmac.compare_digest(
        found.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _same_nonce(found: str | None, expected: str) -> bool:
    """Play may hand the nonce back re-encoded (padded, other alphabet): compare the bytes."""
    if found is None:
        return False
    try:
        return hmac.compare_digest(b64decode_lenient(found), b64decode_lenient(expected))
    except EncodingError:
        return _same_text(found, expected)


def _digest_allowed(digests: Iterable[str], allowed: frozenset[bytes]) -> bool:
    for digest in digests:
        if digest in _play_spellings(allowed):  # fast path: Play's own spelling
            return True
        try:
            if b64decode_lenient(digest) in allowed:
                return True
        except EncodingError:
            continue
    return False


@functools.lru_cache(maxsize=64)
def _play_spellings(allowed: frozenset[bytes]) -> frozenset[str]:
    """The allowed digests as Play writes them: URL-safe base64 without padding."""
    return frozenset(b64url_encode(digest) for digest in allowed)


def evaluate_verdict(
    verdict: IntegrityVerdict,
    policy: PlayIntegrityPolicy,
    *,
    now: datetime,
    request_hash: str | None = None,
    nonce: str | None = None,
) -> PolicyResult:
    """Apply ``policy`` to ``verdict`` at ``now``; exactly one of ``request_hash`` / ``nonce``.

    Pure: never raises for a failing verdict (its failures are the result's reasons); raises
    ``ValueError`` only for a misuse (no binding, both bindings, a naive ``now``).
    """
    if (request_hash is None) == (nonce is None):
        raise ValueError("pass exactly one of request_hash (standard) or nonce (classic)")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    request = verdict.request_details
    app = verdict.app_integrity
    device = verdict.device_integrity
    environment = verdict.environment_details
    failed: list[Reason] = []

    if request.request_package_name != policy.package_name or (
        app.package_name is not None and app.package_name != policy.package_name
    ):
        failed.append(Reason.GOOGLE_PACKAGE_MISMATCH)
    if request_hash is not None:
        if not _same_text(request.request_hash, request_hash):
            failed.append(Reason.GOOGLE_REQUEST_HASH_MISMATCH)
    elif nonce is not None and not _same_nonce(request.nonce, nonce):
        failed.append(Reason.GOOGLE_NONCE_MISMATCH)
    age_millis = int(now.timestamp() * 1000) - request.timestamp_millis
    if age_millis > policy.max_age_seconds * 1000 or -age_millis > policy.clock_skew_seconds * 1000:
        failed.append(Reason.GOOGLE_STALE)
    if app.app_recognition_verdict != "PLAY_RECOGNIZED":
        failed.append(Reason.GOOGLE_APP_NOT_RECOGNIZED)
    if policy.digest_set and not _digest_allowed(app.certificate_sha256_digest, policy.digest_set):
        failed.append(Reason.GOOGLE_CERTIFICATE_MISMATCH)
    level = policy.required_device_level
    if not (
        device.meets(level)
        or (
            policy.allow_virtual
            and level is not DeviceLevel.STRONG
            and device.meets(DeviceLevel.VIRTUAL)
        )
    ):
        failed.append(Reason.GOOGLE_DEVICE_INTEGRITY_INSUFFICIENT)
    if policy.require_license and verdict.account_details.app_licensing_verdict != "LICENSED":
        failed.append(Reason.GOOGLE_UNLICENSED)
    if policy.min_version_code is not None and (
        app.version_code is None or app.version_code < policy.min_version_code
    ):
        failed.append(Reason.GOOGLE_VERSION_TOO_OLD)
    # Opt-in signals: absent means the app did not ask, so the rule has nothing to judge.
    if environment.play_protect_verdict in policy.play_protect_risky:
        failed.append(Reason.GOOGLE_PLAY_PROTECT_RISK)
    risk = environment.app_access_risk
    if risk is not None and not policy.app_access_risky.isdisjoint(risk.apps_detected):
        failed.append(Reason.GOOGLE_APP_ACCESS_RISK)
    activity = device.device_activity_level
    if (
        policy.max_device_activity_level is not None
        and activity is not None
        and _ACTIVITY_LEVELS.get(activity, 99) > _ACTIVITY_LEVELS[policy.max_device_activity_level]
    ):
        failed.append(Reason.GOOGLE_DEVICE_ACTIVITY_HIGH)

    reasons: list[str] = []
    monitored: list[str] = []
    decision = Decision.ALLOW
    for reason in failed:
        cost = policy.actions[reason]
        if cost is RuleAction.IGNORE:
            monitored.append(reason.value)
            continue
        reasons.append(reason.value)
        if cost is RuleAction.BLOCK:
            decision = Decision.BLOCK
        elif decision is Decision.ALLOW:
            decision = Decision.LIMIT
    return PolicyResult(decision, tuple(reasons), verdict, tuple(monitored))
