"""Which signing key signs: published keys wait ``publish_delay`` before signing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from appintegrity.service.app_tokens import choose_signer
from appintegrity.store.base import SigningKeyRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DELAY = timedelta(seconds=10)


def key(kid: str, created: float, retired: float | None = None) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=kid,
        private_key_pem=b"",
        created_at=T0 + timedelta(seconds=created),
        retired_at=None if retired is None else T0 + timedelta(seconds=retired),
    )


def test_the_first_key_signs_at_once() -> None:
    signer = choose_signer([key("a", 0)], T0, DELAY)
    assert signer is not None and signer.kid == "a"


def test_after_a_rotation_the_old_key_signs_until_the_new_one_is_published_long_enough() -> None:
    records = [key("new", 100), key("old", 0, retired=100)]
    at = [choose_signer(records, T0 + timedelta(seconds=s), DELAY) for s in (100, 109, 110, 500)]
    assert [r.kid if r else None for r in at] == ["old", "old", "new", "new"]


def test_two_young_keys_from_a_start_up_race_agree_on_the_oldest() -> None:
    records = [key("b", 1), key("a", 0)]
    signer = choose_signer(records, T0 + timedelta(seconds=2), DELAY)
    assert signer is not None and signer.kid == "a"


def test_a_rotation_right_after_the_first_key_still_waits_for_publication() -> None:
    records = [key("new", 2), key("first", 0, retired=2)]
    at = [choose_signer(records, T0 + timedelta(seconds=s), DELAY) for s in (3, 11, 12)]
    assert [r.kid if r else None for r in at] == ["first", "first", "new"]


def test_no_signer_when_every_key_is_retired() -> None:
    assert choose_signer([key("a", 0, retired=5)], T0 + timedelta(seconds=6), DELAY) is None


def test_a_young_key_signs_when_the_old_one_retired_long_ago() -> None:
    records = [key("new", 100), key("old", 0, retired=50)]
    signer = choose_signer(records, T0 + timedelta(seconds=101), DELAY)
    assert signer is not None and signer.kid == "new"
