"""Play Integrity client error codes: what an app reports when it could not get a token.

When ``requestIntegrityToken`` (classic) or ``StandardIntegrityTokenProvider.request``
(standard) fails, the Play Integrity library gives the app a negative error code instead of a
token: an ``IntegrityErrorCode`` for classic requests, a ``StandardIntegrityErrorCode`` for
standard ones. The two tables agree except from -17 on (classic -17 is CLIENT_TRANSIENT_ERROR,
standard -17 is REQUEST_HASH_TOO_LONG), so a lookup needs the request type.

Google's advice (Play Integrity "Handle error codes"): retry transient errors with exponential
backoff, 5 s then 10 s then 20 s, and after three retries treat the client as having failed every
integrity check. A report proves nothing about the device (anyone can send one), so the server
decides what it costs; this module only names the code and says who can fix it and how.

Pure data: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BACKOFF_SECONDS",
    "CLASSIC_ERRORS",
    "STANDARD_ERRORS",
    "ClientError",
    "RequestType",
    "ResolvedBy",
    "lookup_client_error",
]

RequestType = Literal["standard", "classic"]
# Who can make the next attempt succeed: the app on its own (retry, re-prepare), the user
# (update or install Play components), the developer (a bug or a console setting), or nobody
# (Google says these point at tampering and are not actionable).
ResolvedBy = Literal["app", "user", "developer", "nobody"]

# Google's recommended retry delays after a transient failure; the first is the Retry-After.
BACKOFF_SECONDS: tuple[int, ...] = (5, 10, 20)
_FIRST_BACKOFF = BACKOFF_SECONDS[0]
_BACKOFF_TEXT = "retry with backoff (5, 10, 20 s); after three failed retries treat it as failed"


@dataclass(frozen=True)
class ClientError:
    """One client error code, as the app's Play Integrity library reported it.

    ``retryable``: a new attempt (new challenge, new token request) can succeed without the user
    or the developer doing anything. ``retry_after_seconds``: how long to wait before it, when
    waiting is what helps (None when the app must do something first, or must not retry).
    ``known`` is False for a code this table does not list (a newer library, or a made-up value).
    """

    code: int
    name: str
    retryable: bool
    resolved_by: ResolvedBy
    remediation: str
    retry_after_seconds: int | None = None
    known: bool = True


def _transient(code: int, name: str, remediation: str) -> ClientError:
    return ClientError(code, name, True, "app", f"{remediation}; {_BACKOFF_TEXT}", _FIRST_BACKOFF)


def _final(code: int, name: str, resolved_by: ResolvedBy, remediation: str) -> ClientError:
    return ClientError(code, name, False, resolved_by, remediation)


# Codes shared by both request types (same number, same meaning).
_COMMON: tuple[ClientError, ...] = (
    _final(
        -1,
        "API_NOT_AVAILABLE",
        "user",
        "ask the user to update the Google Play Store; developer: check that the Play "
        "Integrity API is enabled for this app in Play Console",
    ),
    _final(
        -2,
        "PLAY_STORE_NOT_FOUND",
        "user",
        "ask the user to install or enable the official Google Play Store",
    ),
    _transient(-3, "NETWORK_ERROR", "no network: ask the user to check the connection"),
    _final(-5, "APP_NOT_INSTALLED", "nobody", "not actionable: possibly an attack"),
    _final(
        -6,
        "PLAY_SERVICES_NOT_FOUND",
        "user",
        "ask the user to install or enable Google Play services",
    ),
    _final(-7, "APP_UID_MISMATCH", "nobody", "not actionable: possibly an attack"),
    _transient(
        -8,
        "TOO_MANY_REQUESTS",
        "the app was throttled by Play; developer: request fewer tokens or a higher quota",
    ),
    _transient(
        -9,
        "CANNOT_BIND_TO_SERVICE",
        "binding to the Play Store failed; if it persists, ask the user to update the "
        "Google Play Store",
    ),
    _transient(-12, "GOOGLE_SERVER_UNAVAILABLE", "Google's server had an internal error"),
    _final(
        -14,
        "PLAY_STORE_VERSION_OUTDATED",
        "user",
        "ask the user to update the Google Play Store",
    ),
    _final(
        -15,
        "PLAY_SERVICES_VERSION_OUTDATED",
        "user",
        "ask the user to update Google Play services",
    ),
    _final(
        -16,
        "CLOUD_PROJECT_NUMBER_IS_INVALID",
        "developer",
        "developer: fix the Cloud project number the app passes to Play Integrity",
    ),
    _transient(-100, "INTERNAL_ERROR", "an unknown internal error on the device"),
    _final(
        -101,
        "INITIALIZATION_NEEDED",
        "developer",
        "developer: initialise the Play Integrity native library before requesting tokens",
    ),
)

# StandardIntegrityErrorCode: standard requests (Expo's requestIntegrityCheck).
STANDARD_ERRORS: Mapping[int, ClientError] = {
    error.code: error
    for error in (
        *_COMMON,
        _final(
            -17,
            "REQUEST_HASH_TOO_LONG",
            "developer",
            "developer: the requestHash must be at most 500 characters; send "
            "base64url(SHA-256(payload)), 43 characters",
        ),
        _transient(-18, "CLIENT_TRANSIENT_ERROR", "a transient error on the device"),
        ClientError(
            -19,
            "INTEGRITY_TOKEN_PROVIDER_INVALID",
            True,
            "app",
            "the token provider expired: prepare a new one (Expo: prepareIntegrityTokenProvider) "
            "and request a token again with a new challenge",
        ),
    )
}

# IntegrityErrorCode: classic requests (requestIntegrityToken with a nonce).
CLASSIC_ERRORS: Mapping[int, ClientError] = {
    error.code: error
    for error in (
        *_COMMON,
        _final(
            -4,
            "PLAY_STORE_ACCOUNT_NOT_FOUND",
            "user",
            "ask the user to sign in to the Google Play Store",
        ),
        _final(
            -10,
            "NONCE_TOO_SHORT",
            "developer",
            "developer: the nonce must be at least 16 bytes; send base64url(SHA-256(payload))",
        ),
        _final(
            -11,
            "NONCE_TOO_LONG",
            "developer",
            "developer: the nonce must be under 500 bytes; send base64url(SHA-256(payload))",
        ),
        _final(
            -13,
            "NONCE_IS_NOT_BASE64",
            "developer",
            "developer: the nonce must be URL-safe base64 without wrapping",
        ),
        _transient(-17, "CLIENT_TRANSIENT_ERROR", "a transient error on the device"),
    )
}

_TABLES: Mapping[RequestType, Mapping[int, ClientError]] = {
    "standard": STANDARD_ERRORS,
    "classic": CLASSIC_ERRORS,
}


def lookup_client_error(code: int, request_type: RequestType = "standard") -> ClientError:
    """The table entry for ``code``; an unknown code gets a non-retryable ``UNKNOWN`` entry.

    Unknown is not retryable: nothing says waiting helps, and Google's advice for errors that
    persist is to treat the client as failing.
    """
    error = _TABLES[request_type].get(code)
    if error is not None:
        return error
    return ClientError(
        code,
        "UNKNOWN",
        False,
        "developer",
        f"developer: {code} is not a {request_type} Play Integrity error code this server "
        "knows; check the code the app sends and the request type",
        known=False,
    )
