"""The Play Integrity client error table: names, retry advice and who can fix each code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appintegrity.google.client_errors import (
    BACKOFF_SECONDS,
    CLASSIC_ERRORS,
    STANDARD_ERRORS,
    lookup_client_error,
)

# StandardIntegrityErrorCode values and names, from Google's reference.
STANDARD_NAMES = {
    -1: "API_NOT_AVAILABLE",
    -2: "PLAY_STORE_NOT_FOUND",
    -3: "NETWORK_ERROR",
    -5: "APP_NOT_INSTALLED",
    -6: "PLAY_SERVICES_NOT_FOUND",
    -7: "APP_UID_MISMATCH",
    -8: "TOO_MANY_REQUESTS",
    -9: "CANNOT_BIND_TO_SERVICE",
    -12: "GOOGLE_SERVER_UNAVAILABLE",
    -14: "PLAY_STORE_VERSION_OUTDATED",
    -15: "PLAY_SERVICES_VERSION_OUTDATED",
    -16: "CLOUD_PROJECT_NUMBER_IS_INVALID",
    -17: "REQUEST_HASH_TOO_LONG",
    -18: "CLIENT_TRANSIENT_ERROR",
    -19: "INTEGRITY_TOKEN_PROVIDER_INVALID",
    -100: "INTERNAL_ERROR",
}


@pytest.mark.parametrize(("code", "name"), sorted(STANDARD_NAMES.items()))
def test_standard_codes_have_googles_names(code: int, name: str) -> None:
    error = lookup_client_error(code)
    assert (error.code, error.name, error.known) == (code, name, True)
    assert error.remediation


@pytest.mark.parametrize("code", [-3, -8, -9, -12, -18, -100])
def test_transient_codes_are_retryable_after_the_first_backoff(code: int) -> None:
    error = lookup_client_error(code)
    assert error.retryable is True
    assert error.resolved_by == "app"
    assert error.retry_after_seconds == BACKOFF_SECONDS[0] == 5
    assert "5, 10, 20 s" in error.remediation


def test_an_invalid_token_provider_is_retried_at_once_after_preparing_a_new_one() -> None:
    error = lookup_client_error(-19)
    assert error.retryable is True
    assert error.retry_after_seconds is None  # waiting does not help: re-preparing does
    assert "prepareIntegrityTokenProvider" in error.remediation


@pytest.mark.parametrize(
    ("code", "resolved_by", "hint"),
    [
        (-15, "user", "update Google Play services"),
        (-14, "user", "update the Google Play Store"),
        (-2, "user", "install or enable the official Google Play Store"),
        (-16, "developer", "Cloud project number"),
        (-17, "developer", "500 characters"),
        (-5, "nobody", "possibly an attack"),
        (-7, "nobody", "possibly an attack"),
    ],
)
def test_final_codes_say_who_can_fix_them(code: int, resolved_by: str, hint: str) -> None:
    error = lookup_client_error(code)
    assert error.retryable is False
    assert error.retry_after_seconds is None
    assert error.resolved_by == resolved_by
    assert hint in error.remediation


def test_classic_and_standard_tables_differ_from_minus_17_on() -> None:
    assert lookup_client_error(-17, "classic").name == "CLIENT_TRANSIENT_ERROR"
    assert lookup_client_error(-17, "classic").retryable is True
    assert lookup_client_error(-17, "standard").name == "REQUEST_HASH_TOO_LONG"
    assert lookup_client_error(-17, "standard").retryable is False
    # Standard-only codes are unknown to classic requests, and the reverse.
    assert lookup_client_error(-19, "classic").known is False
    assert lookup_client_error(-18, "classic").known is False
    assert lookup_client_error(-13, "classic").name == "NONCE_IS_NOT_BASE64"
    assert lookup_client_error(-13, "standard").known is False
    assert lookup_client_error(-4, "classic").name == "PLAY_STORE_ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("code", [-20, -99, 7, 2**31 - 1, -(2**31)])
def test_unknown_codes_get_a_final_unknown_entry(code: int) -> None:
    error = lookup_client_error(code)
    assert (error.code, error.name, error.known) == (code, "UNKNOWN", False)
    assert error.retryable is False
    assert error.retry_after_seconds is None
    assert str(code) in error.remediation


def test_every_table_entry_is_consistent() -> None:
    for table in (STANDARD_ERRORS, CLASSIC_ERRORS):
        for code, error in table.items():
            assert error.code == code < 0
            assert error.known and error.name.isupper() and error.remediation
            # Only retryable codes carry a delay; every transient one does except -19.
            if error.retry_after_seconds is not None:
                assert error.retryable


@settings(max_examples=200, deadline=None)
@given(code=st.integers(), classic=st.booleans())
def test_lookup_never_fails(code: int, classic: bool) -> None:
    error = lookup_client_error(code, "classic" if classic else "standard")
    assert error.code == code
    table = CLASSIC_ERRORS if classic else STANDARD_ERRORS
    assert error.known is (code in table)
