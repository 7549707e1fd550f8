"""The store contract: every backend passes the same tests (see conftest's ``backend``)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from appintegrity.store import (
    ChallengeOutcome,
    ChallengeRecord,
    DebugTokenRecord,
    DeviceKey,
    SigningKeyRecord,
    Store,
)

from .conftest import Backend

pytestmark = pytest.mark.anyio

# Real wall-clock times: Redis expires keys by its own clock, so the contract is exercised
# with times near the present.
NOW = datetime.now(UTC).replace(microsecond=123456)


def challenge(
    value: str | None = None,
    *,
    created: datetime = NOW,
    ttl: timedelta = timedelta(minutes=5),
    purpose: str = "assertion",
    key_id: str | None = None,
) -> ChallengeRecord:
    return ChallengeRecord(
        value=value or secrets.token_urlsafe(16),
        purpose=purpose,
        key_id=key_id,
        created_at=created,
        expires_at=created + ttl,
    )


def device_key(
    key_id: str | None = None,
    *,
    app_id: str = "ABCDE12345.com.example.app",
    created: datetime = NOW,
    counter: int = 0,
    receipt: bytes | None = b"\x30\x80receipt",
    receipt_updated: datetime | None = None,
) -> DeviceKey:
    return DeviceKey(
        key_id=key_id or secrets.token_bytes(32).hex(),
        app_id=app_id,
        platform="ios",
        public_key=b"\x04" + secrets.token_bytes(64),
        counter=counter,
        environment="production",
        receipt=receipt,
        risk_metric=None,
        created_at=created,
        last_seen_at=created,
        receipt_updated_at=receipt_updated or (created if receipt is not None else None),
    )


# Challenges -------------------------------------------------------------------------------


async def test_challenge_is_consumed_once_and_round_trips(store: Store) -> None:
    record = challenge(purpose="attestation", key_id="a2V5")
    await store.add_challenge(record)

    first = await store.consume_challenge(record.value, NOW + timedelta(seconds=1))
    assert first.outcome is ChallengeOutcome.OK
    assert first.record == record
    assert first.record.created_at.tzinfo is not None

    second = await store.consume_challenge(record.value, NOW + timedelta(seconds=2))
    assert second.outcome is ChallengeOutcome.CONSUMED
    assert second.record == record


async def test_unissued_challenge_is_unknown(store: Store) -> None:
    await store.add_challenge(challenge("issued"))
    result = await store.consume_challenge("never-issued", NOW)
    assert result.outcome is ChallengeOutcome.UNKNOWN
    assert result.record is None


async def test_expired_challenge_is_expired_and_consumed_all_the_same(store: Store) -> None:
    record = challenge(ttl=timedelta(seconds=30))
    await store.add_challenge(record)
    late = record.expires_at + timedelta(microseconds=1)
    assert (await store.consume_challenge(record.value, late)).outcome is ChallengeOutcome.EXPIRED
    again = await store.consume_challenge(record.value, late)
    assert again.outcome is ChallengeOutcome.CONSUMED


async def test_challenge_at_exact_expiry_is_expired(store: Store) -> None:
    record = challenge()
    await store.add_challenge(record)
    result = await store.consume_challenge(record.value, record.expires_at)
    assert result.outcome is ChallengeOutcome.EXPIRED


async def test_concurrent_consumers_of_one_challenge_get_exactly_one_ok(
    backend: Backend, store: Store
) -> None:
    # Three store objects play three service instances sharing the backend.
    stores = [store, await backend.open(), await backend.open()]
    record = challenge()
    await store.add_challenge(record)
    results = await asyncio.gather(
        *(stores[i % 3].consume_challenge(record.value, NOW) for i in range(50))
    )
    outcomes = [r.outcome for r in results]
    assert outcomes.count(ChallengeOutcome.OK) == 1
    assert outcomes.count(ChallengeOutcome.CONSUMED) == 49


# Device keys ------------------------------------------------------------------------------


async def test_add_key_is_insert_if_absent(store: Store) -> None:
    key = device_key()
    assert await store.add_key(key) is True
    impostor = device_key(key.key_id, app_id="OTHER.app", counter=7)
    assert await store.add_key(impostor) is False
    assert await store.get_key(key.key_id) == key


async def test_get_unknown_key_is_none(store: Store) -> None:
    assert await store.get_key("unknown") is None


async def test_counter_only_moves_upwards(store: Store) -> None:
    key = device_key()
    await store.add_key(key)
    later = NOW + timedelta(minutes=1)
    assert await store.advance_counter(key.key_id, 5, later) is True
    assert await store.advance_counter(key.key_id, 5, later) is False  # replay
    assert await store.advance_counter(key.key_id, 3, later) is False  # backwards
    stored = await store.get_key(key.key_id)
    assert stored is not None
    assert stored.counter == 5
    assert stored.last_seen_at == later
    assert await store.advance_counter("unknown", 1, later) is False


async def test_counter_does_not_advance_on_revoked_key(store: Store) -> None:
    key = device_key()
    await store.add_key(key)
    revoked_at = NOW + timedelta(seconds=10)
    assert await store.revoke_key(key.key_id, revoked_at) is True
    assert await store.advance_counter(key.key_id, 9, NOW + timedelta(seconds=20)) is False
    stored = await store.get_key(key.key_id)
    assert stored is not None
    assert stored.counter == 0
    assert stored.revoked_at == revoked_at
    assert await store.revoke_key("unknown", NOW) is False


async def test_concurrent_advances_to_one_value_succeed_once(
    backend: Backend, store: Store
) -> None:
    stores = [store, await backend.open(), await backend.open()]
    key = device_key()
    await store.add_key(key)
    results = await asyncio.gather(
        *(stores[i % 3].advance_counter(key.key_id, 1, NOW) for i in range(50))
    )
    assert results.count(True) == 1


async def test_concurrent_advances_end_at_the_highest_counter(store: Store) -> None:
    key = device_key()
    await store.add_key(key)
    values = list(range(1, 51))
    secrets.SystemRandom().shuffle(values)
    await asyncio.gather(*(store.advance_counter(key.key_id, v, NOW) for v in values))
    stored = await store.get_key(key.key_id)
    assert stored is not None
    assert stored.counter == 50


async def test_list_keys_newest_first_filtered_and_limited(store: Store) -> None:
    keys = [
        device_key(app_id="app.one" if i % 2 else "app.two", created=NOW + timedelta(seconds=i))
        for i in range(5)
    ]
    for key in keys:
        await store.add_key(key)
    assert [k.key_id for k in await store.list_keys()] == [k.key_id for k in reversed(keys)]
    assert [k.key_id for k in await store.list_keys("app.one")] == [keys[3].key_id, keys[1].key_id]
    assert [k.key_id for k in await store.list_keys(limit=2)] == [keys[4].key_id, keys[3].key_id]
    assert await store.list_keys("app.none") == []
    assert [k.key_id for k in await store.list_keys("app.two", limit=1)] == [keys[4].key_id]


@pytest.mark.parametrize("limit", [0, -1, -1000])
async def test_list_keys_refuses_a_limit_below_one(store: Store, limit: int) -> None:
    """Every backend alike: no "0 means all" (Redis, SQLite's -1) and no backend error
    (PostgreSQL refuses a negative LIMIT)."""
    await store.add_key(device_key(app_id="app.one"))
    for app_id in (None, "app.one"):
        with pytest.raises(ValueError, match="limit must be at least 1"):
            await store.list_keys(app_id, limit)


async def test_update_receipt(store: Store) -> None:
    key = device_key()
    await store.add_key(key)
    refreshed = NOW + timedelta(hours=30)
    assert await store.update_receipt(key.key_id, b"new receipt", 3, now=refreshed) is True
    stored = await store.get_key(key.key_id)
    assert stored is not None
    assert (stored.receipt, stored.risk_metric) == (b"new receipt", 3)
    assert stored.receipt_updated_at == refreshed
    assert await store.update_receipt("unknown", b"x", None) is False


async def test_update_receipt_without_now_uses_the_wall_clock(store: Store) -> None:
    key = device_key(created=NOW - timedelta(days=2))
    await store.add_key(key)
    before = datetime.now(UTC)
    assert await store.update_receipt(key.key_id, b"new receipt", None) is True
    after = datetime.now(UTC)
    stored = await store.get_key(key.key_id)
    assert stored is not None
    assert stored.receipt_updated_at is not None
    assert before <= stored.receipt_updated_at <= after


async def test_add_key_records_when_its_receipt_was_stored(store: Store) -> None:
    with_receipt = device_key(created=NOW - timedelta(hours=1))
    implicit = replace(with_receipt, key_id="implicit", receipt_updated_at=None)
    without = device_key("without", receipt=None)
    explicit = device_key("explicit", receipt_updated=NOW - timedelta(minutes=5))
    for key in (implicit, without, explicit):
        assert await store.add_key(key) is True

    stored = await store.get_key("implicit")
    assert stored is not None
    assert stored.receipt_updated_at == implicit.created_at  # set from created_at
    assert await store.get_key("without") == without
    assert without.receipt_updated_at is None
    assert await store.get_key("explicit") == explicit


# Receipts due for refresh -------------------------------------------------------------------

APP = "ABCDE12345.com.example.app"


async def test_keys_due_for_receipt_refresh_oldest_first_and_limited(
    backend: Backend, store: Store
) -> None:
    cutoff = NOW - timedelta(hours=24)
    # Inserted newest-first, so the order below comes from receipt_updated_at, not insertion.
    due = [
        device_key(f"due-{i}", created=cutoff - timedelta(days=10), receipt_updated=moment)
        for i, moment in enumerate([cutoff - timedelta(hours=h) for h in (1, 2, 3, 48)], start=1)
    ]
    for key in reversed(due):
        await store.add_key(key)
    not_due = [
        device_key("fresh", receipt_updated=cutoff + timedelta(minutes=1)),
        device_key("at-cutoff", receipt_updated=cutoff),  # "before" is exclusive
        device_key("no-receipt", created=cutoff - timedelta(days=30), receipt=None),
        device_key("other-app", app_id="other.app", receipt_updated=cutoff - timedelta(days=5)),
        replace(device_key("revoked-at-add", created=cutoff - timedelta(days=9)), revoked_at=NOW),
        device_key("revoked-later", receipt_updated=cutoff - timedelta(days=7)),
    ]
    for key in not_due:
        await store.add_key(key)
    assert await store.revoke_key("revoked-later", NOW) is True

    oldest_first = ["due-4", "due-3", "due-2", "due-1"]
    found = await store.keys_due_for_receipt_refresh(APP, cutoff, 100)
    assert [k.key_id for k in found] == oldest_first
    assert found[0] == due[3]  # whole records, as get_key returns them
    assert [k.key_id for k in await store.keys_due_for_receipt_refresh(APP, cutoff, 2)] == [
        "due-4",
        "due-3",
    ]
    assert await store.keys_due_for_receipt_refresh(APP, cutoff, 0) == []
    assert await store.keys_due_for_receipt_refresh("app.none", cutoff, 10) == []
    other = await store.keys_due_for_receipt_refresh("other.app", cutoff, 10)
    assert [k.key_id for k in other] == ["other-app"]

    # A refreshed receipt leaves the queue; another instance sees it at once.
    assert await store.update_receipt("due-4", b"newer", 2, now=NOW) is True
    second = await backend.open()
    after = await second.keys_due_for_receipt_refresh(APP, cutoff, 100)
    assert [k.key_id for k in after] == ["due-3", "due-2", "due-1"]
    # It comes back once the cut-off passes its refresh time, behind older ones.
    later = NOW + timedelta(hours=1)
    assert [k.key_id for k in await store.keys_due_for_receipt_refresh(APP, later, 100)] == [
        "due-3",
        "due-2",
        "due-1",
        "at-cutoff",
        "fresh",
        "due-4",
    ]
    # Revoking a due key takes it out.
    assert await store.revoke_key("due-3", NOW) is True
    remaining = await store.keys_due_for_receipt_refresh(APP, cutoff, 100)
    assert [k.key_id for k in remaining] == ["due-2", "due-1"]


async def test_mark_receipt_checked_only_while_that_receipt_is_stored(store: Store) -> None:
    cutoff = NOW - timedelta(hours=24)
    key = device_key("k", receipt=b"R0", receipt_updated=cutoff - timedelta(hours=1))
    await store.add_key(key)

    # A racing refresh stored R1 first: confirming R0 must not touch it.
    assert await store.update_receipt("k", b"R1", 1, now=cutoff - timedelta(minutes=30)) is True
    assert await store.mark_receipt_checked("k", b"R0", NOW) is False
    stored = await store.get_key("k")
    assert stored is not None
    assert (stored.receipt, stored.receipt_updated_at) == (b"R1", cutoff - timedelta(minutes=30))
    assert [k.key_id for k in await store.keys_due_for_receipt_refresh(APP, cutoff, 10)] == ["k"]

    assert await store.mark_receipt_checked("k", b"R1", NOW) is True
    stored = await store.get_key("k")
    assert stored is not None
    assert (stored.receipt, stored.risk_metric, stored.receipt_updated_at) == (b"R1", 1, NOW)
    assert await store.keys_due_for_receipt_refresh(APP, cutoff, 10) == []

    assert await store.mark_receipt_checked("unknown", b"R1", NOW) is False
    await store.revoke_key("k", NOW)
    assert await store.mark_receipt_checked("k", b"R1", NOW + timedelta(days=3)) is False
    assert await store.keys_due_for_receipt_refresh(APP, NOW + timedelta(days=2), 10) == []


# Token ids ----------------------------------------------------------------------------------


async def test_token_id_is_consumed_exactly_once(backend: Backend, store: Store) -> None:
    stores = [store, await backend.open(), await backend.open()]
    expires = NOW + timedelta(hours=1)
    results = await asyncio.gather(
        *(stores[i % 3].consume_token_id("jti-1", expires, NOW) for i in range(50))
    )
    assert results.count(True) == 1
    assert await store.consume_token_id("jti-2", expires, NOW) is True
    assert await store.consume_token_id("jti-1", expires, NOW) is False


# Signing keys -------------------------------------------------------------------------------


async def test_signing_key_lifecycle(store: Store) -> None:
    old = SigningKeyRecord("kid-old", b"-----BEGIN PRIVATE KEY-----\nold\n", NOW)
    new = SigningKeyRecord("kid-new", b"-----BEGIN PRIVATE KEY-----\nnew\n", NOW + timedelta(1))
    await store.add_signing_key(old)
    await store.add_signing_key(new)
    assert await store.list_signing_keys() == [new, old]

    retired = NOW + timedelta(days=2)
    assert await store.retire_signing_key("kid-old", retired) is True
    assert await store.retire_signing_key("kid-missing", retired) is False
    listed = await store.list_signing_keys()
    assert [k.retired_at for k in listed] == [None, retired]

    assert await store.delete_signing_key("kid-old") is True
    assert await store.delete_signing_key("kid-old") is False
    assert await store.list_signing_keys() == [new]


async def test_duplicate_signing_key_is_refused(store: Store) -> None:
    record = SigningKeyRecord("kid", b"pem", NOW)
    await store.add_signing_key(record)
    with pytest.raises(ValueError):
        await store.add_signing_key(SigningKeyRecord("kid", b"other", NOW))
    assert await store.list_signing_keys() == [record]


# Debug tokens -------------------------------------------------------------------------------


async def test_debug_token_lifecycle(store: Store) -> None:
    first = DebugTokenRecord("dt-1", "app.one", "CI", hashlib.sha256(b"s1").digest(), NOW)
    second = DebugTokenRecord(
        "dt-2", "app.two", "simulator", hashlib.sha256(b"s2").digest(), NOW + timedelta(1)
    )
    await store.add_debug_token(first)
    await store.add_debug_token(second)

    assert await store.find_debug_token(hashlib.sha256(b"s1").digest()) == first
    assert await store.find_debug_token(hashlib.sha256(b"nope").digest()) is None
    assert await store.list_debug_tokens() == [second, first]
    assert await store.list_debug_tokens("app.one") == [first]

    revoked = NOW + timedelta(days=3)
    assert await store.revoke_debug_token("dt-1", revoked) is True
    assert await store.revoke_debug_token("dt-missing", revoked) is False
    found = await store.find_debug_token(first.secret_hash)
    assert found is not None
    assert found.revoked_at == revoked


# Rate limits --------------------------------------------------------------------------------


async def test_rate_limit_fixed_window(store: Store) -> None:
    window = 60
    start = datetime.fromtimestamp((int(NOW.timestamp()) // window + 1) * window, UTC)
    moment = start + timedelta(seconds=15)
    results = [await store.hit_rate_limit("ip:1", 3, window, moment) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[3].retry_after_seconds == 45

    # Another bucket is independent; the next window starts afresh.
    assert (await store.hit_rate_limit("ip:2", 3, window, moment)).allowed is True
    next_window = start + timedelta(seconds=window + 1)
    assert (await store.hit_rate_limit("ip:1", 3, window, next_window)).allowed is True


async def test_rate_limit_is_atomic_across_instances(backend: Backend, store: Store) -> None:
    stores = [store, await backend.open(), await backend.open()]
    results = await asyncio.gather(
        *(stores[i % 3].hit_rate_limit("key:abc", 10, 60, NOW) for i in range(40))
    )
    assert [r.allowed for r in results].count(True) == 10


# Housekeeping -------------------------------------------------------------------------------


async def test_purge_expired_forgets_expired_challenges_and_token_ids(
    backend: Backend, store: Store
) -> None:
    if backend.purges_by_ttl:
        pytest.skip("Redis expires challenges and token ids by TTL; purge_expired is a no-op")
    short = challenge(ttl=timedelta(seconds=10))
    long = challenge(ttl=timedelta(hours=1))
    await store.add_challenge(short)
    await store.add_challenge(long)
    await store.consume_token_id("old", NOW + timedelta(seconds=10), NOW)
    await store.consume_token_id("new", NOW + timedelta(hours=1), NOW)

    later = NOW + timedelta(minutes=1)
    assert await store.purge_expired(later) == 2
    assert (await store.consume_challenge(short.value, later)).outcome is ChallengeOutcome.UNKNOWN
    assert (await store.consume_challenge(long.value, later)).outcome is ChallengeOutcome.OK
    assert await store.consume_token_id("new", NOW + timedelta(hours=1), later) is False
    assert await store.purge_expired(later) == 0


async def test_purge_expired_keeps_durable_records(store: Store) -> None:
    key = device_key()
    await store.add_key(key)
    await store.add_signing_key(SigningKeyRecord("kid", b"pem", NOW))
    assert await store.purge_expired(NOW + timedelta(days=365)) >= 0
    assert await store.get_key(key.key_id) == key
    assert len(await store.list_signing_keys()) == 1


# Misuse ---------------------------------------------------------------------------------------


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.consume_challenge("x", datetime(2026, 1, 1))


async def test_ping_succeeds_on_a_reachable_backend(store: Store) -> None:
    await store.ping()
