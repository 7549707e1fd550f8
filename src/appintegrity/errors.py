"""One exception hierarchy; every error carries a stable, machine-readable code.

Callers branch on ``.reason`` / ``.code`` (part of the public API, listed in the
vectors README), never on message text. Messages say what was expected and what
was found, and never contain a secret.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable verification reason codes (public API: never rename one)."""

    # Apple App Attest
    APPLE_MALFORMED = "apple.malformed"
    APPLE_UNSUPPORTED_FORMAT = "apple.unsupported_format"
    APPLE_CERTIFICATE_CHAIN_INVALID = "apple.certificate_chain_invalid"
    APPLE_NONCE_MISMATCH = "apple.nonce_mismatch"
    APPLE_KEY_ID_MISMATCH = "apple.key_id_mismatch"
    APPLE_APP_ID_MISMATCH = "apple.app_id_mismatch"
    APPLE_COUNTER_INVALID = "apple.counter_invalid"
    APPLE_ENVIRONMENT_MISMATCH = "apple.environment_mismatch"
    APPLE_CREDENTIAL_ID_MISMATCH = "apple.credential_id_mismatch"
    APPLE_SIGNATURE_INVALID = "apple.signature_invalid"
    APPLE_RECEIPT_INVALID = "apple.receipt_invalid"
    # Apple App Attest: receipt refresh (data.appattest.apple.com)
    APPLE_RECEIPT_REFRESH_FAILED = "apple.receipt_refresh_failed"
    APPLE_RECEIPT_REFRESH_UNAUTHORIZED = "apple.receipt_refresh_unauthorized"
    APPLE_RECEIPT_REFRESH_RATE_LIMITED = "apple.receipt_refresh_rate_limited"
    APPLE_RECEIPT_REFRESH_UNAVAILABLE = "apple.receipt_refresh_unavailable"
    # Apple App Attest: fraud-risk decision (a policy reason, never an error on its own)
    APPLE_RISK_METRIC_HIGH = "apple.risk_metric_high"

    # Google Play Integrity: token
    GOOGLE_MALFORMED = "google.malformed"
    GOOGLE_DECRYPTION_FAILED = "google.decryption_failed"
    GOOGLE_SIGNATURE_INVALID = "google.signature_invalid"
    # Google Play Integrity: verdict checks (policy rules)
    GOOGLE_PACKAGE_MISMATCH = "google.package_mismatch"
    GOOGLE_REQUEST_HASH_MISMATCH = "google.request_hash_mismatch"
    GOOGLE_NONCE_MISMATCH = "google.nonce_mismatch"
    GOOGLE_STALE = "google.stale"
    GOOGLE_APP_NOT_RECOGNIZED = "google.app_not_recognized"
    GOOGLE_CERTIFICATE_MISMATCH = "google.certificate_mismatch"
    GOOGLE_DEVICE_INTEGRITY_INSUFFICIENT = "google.device_integrity_insufficient"
    GOOGLE_UNLICENSED = "google.unlicensed"
    GOOGLE_VERSION_TOO_OLD = "google.version_too_old"
    GOOGLE_PLAY_PROTECT_RISK = "google.play_protect_risk"
    GOOGLE_APP_ACCESS_RISK = "google.app_access_risk"
    GOOGLE_DEVICE_ACTIVITY_HIGH = "google.device_activity_high"
    # Google Play Integrity: decodeIntegrityToken API
    GOOGLE_API_BAD_REQUEST = "google.api_bad_request"
    GOOGLE_API_UNAUTHORIZED = "google.api_unauthorized"
    GOOGLE_API_PERMISSION_DENIED = "google.api_permission_denied"
    GOOGLE_API_QUOTA_EXCEEDED = "google.api_quota_exceeded"
    GOOGLE_API_UNAVAILABLE = "google.api_unavailable"
    # Google Play Integrity: the app reported a client error code instead of a token
    GOOGLE_CLIENT_ERROR = "google.client_error"


class Code(StrEnum):
    """Stable error codes of the service and the web adapters (public API)."""

    CHALLENGE_UNKNOWN = "challenge.unknown"
    CHALLENGE_EXPIRED = "challenge.expired"
    CHALLENGE_CONSUMED = "challenge.consumed"
    CHALLENGE_MISMATCH = "challenge.mismatch"
    KEY_UNKNOWN = "key.unknown"
    KEY_REVOKED = "key.revoked"
    KEY_EXISTS = "key.exists"
    TOKEN_MISSING = "token.missing"
    TOKEN_INVALID = "token.invalid"
    TOKEN_EXPIRED = "token.expired"
    TOKEN_CONSUMED = "token.consumed"
    TOKEN_DEBUG_REFUSED = "token.debug_refused"
    TOKEN_LIMITED_DECISION = "token.limited_decision"
    TOKEN_NOT_LIMITED_USE = "token.not_limited_use"
    TOKEN_BINDING_MISMATCH = "token.binding_mismatch"
    TOKEN_UNVERIFIABLE = "token.unverifiable"
    APP_UNKNOWN = "app.unknown"
    DECISION_BLOCKED = "decision.blocked"
    REQUEST_INVALID = "request.invalid"
    REQUEST_TOO_LARGE = "request.too_large"
    REQUEST_NOT_FOUND = "request.not_found"
    REQUEST_METHOD_NOT_ALLOWED = "request.method_not_allowed"
    RATE_LIMITED = "rate.limited"
    UNAUTHORIZED = "auth.unauthorized"
    STORE_UNAVAILABLE = "store.unavailable"
    CONFIG_INVALID = "config.invalid"
    INTERNAL = "internal"
    DEBUG_TOKEN_LIMIT = "debug_token.limit"
    DEBUG_TOKEN_UNKNOWN = "debug_token.unknown"


class AppIntegrityError(Exception):
    """Root of every error this library raises on purpose."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class VerificationError(AppIntegrityError):
    """An attestation, assertion, receipt or token did not verify.

    ``reason`` is the stable code (``apple.nonce_mismatch``); it equals ``code``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason


class AppleVerificationError(VerificationError):
    """An App Attest object failed one of Apple's validation steps."""


class GoogleVerificationError(VerificationError):
    """A Play Integrity token failed decryption, signature or a verdict check."""


class ServiceError(AppIntegrityError):
    """A request to the service (or a web adapter) was refused; ``status`` is its HTTP status."""

    def __init__(
        self, code: str, message: str, status: int, retry_after: int | None = None
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after = retry_after


class StoreUnavailableError(ServiceError):
    """The backing store (SQLite, PostgreSQL, Redis) cannot be reached: fail closed."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.STORE_UNAVAILABLE, message, 503)


class ConfigError(AppIntegrityError):
    """The configuration file or environment is invalid."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.CONFIG_INVALID, message)
