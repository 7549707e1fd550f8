"""Three service processes on their own ports, sharing one PostgreSQL schema and one Redis prefix.

Whatever one instance accepts, the others know: a challenge or an assertion is accepted once in
total, a key registered on one asserts on the others, a rotated signing key reaches every JWKS,
and rate limits count requests on all instances together.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from appintegrity.tokens import AppTokenVerifier, StaticJwks

from .cluster import (
    ISSUER,
    KEY_PUBLISH_SECONDS,
    KEY_REFRESH_SECONDS,
    Cluster,
    SharedStores,
    error_code,
    post_together,
    write_config,
)
from .conftest import LazyCluster

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

INSTANCES = 3
COPIES = 30  # concurrent submissions, spread round-robin over the instances
CHALLENGES_PER_MINUTE_PER_IP = 30
VERIFICATIONS_PER_MINUTE_PER_KEY = 40  # above COPIES + 1, so the races below are not limited


@pytest.fixture
def cluster(lazy_cluster: LazyCluster, shared_stores: SharedStores) -> Cluster:
    def build(holder: LazyCluster) -> Cluster:
        config = write_config(
            holder.directory,
            store_url=shared_stores.store_url,
            cache_url=shared_stores.cache_url,
            ca=holder.ca,
            limits={
                "challenges_per_minute_per_ip": CHALLENGES_PER_MINUTE_PER_IP,
                "verifications_per_minute_per_key": VERIFICATIONS_PER_MINUTE_PER_KEY,
            },
        )
        return Cluster(holder.directory, config, holder.ca, INSTANCES)

    return lazy_cluster.get(build)


def _spread(cluster: Cluster, path: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    targets = [(cluster.urls[i % INSTANCES], path, body) for i, body in enumerate(bodies)]
    return asyncio.run(post_together(targets))


def _kid(token: str) -> str:
    header = token.split(".", 1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def _jwks_kids(cluster: Cluster, index: int) -> set[str]:
    response = cluster.instances[index].client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return {key["kid"] for key in response.json()["keys"]}


def _stored_counter(cluster: Cluster, index: int, key_id: str) -> int:
    response = cluster.instances[index].client.get("/v1/admin/keys", headers=cluster.admin())
    assert response.status_code == 200, response.text
    (key,) = [k for k in response.json()["keys"] if k["keyId"] == key_id]
    counter: int = key["counter"]
    return counter


def test_instances_are_separate_processes_on_one_shared_dataset(
    cluster: Cluster, shared_stores: SharedStores
) -> None:
    assert len({i.process.pid for i in cluster.instances}) == INSTANCES
    assert len(set(cluster.urls)) == INSTANCES
    before = len(shared_stores.redis_keys())
    cluster.challenge(0)
    # The challenge went to Redis under this run's prefix (the composite store is in use).
    assert len(shared_stores.redis_keys()) > before


def test_copies_of_one_assertion_across_three_instances_are_accepted_once(
    cluster: Cluster,
) -> None:
    phone = cluster.iphone()
    key_id = cluster.register(0, phone)
    body = cluster.assertion_body(phone, key_id, cluster.challenge(1))
    responses = _spread(cluster, "/v1/assertions", [body] * COPIES)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({200: 1, 409: COPIES - 1}), statuses
    assert {error_code(r) for r in responses if r.status_code == 409} <= {
        "challenge.consumed",
        "apple.counter_invalid",
    }
    assert [r.json()["counter"] for r in responses if r.status_code == 200] == [1]
    assert {_stored_counter(cluster, i, key_id) for i in range(INSTANCES)} == {1}


def test_one_challenge_used_concurrently_across_three_instances_succeeds_once(
    cluster: Cluster,
) -> None:
    challenge = cluster.challenge(2, "attestation")
    bodies: list[dict[str, object]] = [
        dict(cluster.registration_body(cluster.iphone(), challenge)) for _ in range(COPIES)
    ]
    responses = _spread(cluster, "/v1/registrations", bodies)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: 1, 409: COPIES - 1}), statuses
    assert {error_code(r) for r in responses if r.status_code == 409} == {"challenge.consumed"}


def test_one_limited_use_token_consumed_across_three_instances_succeeds_once(
    cluster: Cluster,
) -> None:
    phone = cluster.iphone()
    key_id = cluster.register(1, phone)
    body = cluster.assertion_body(phone, key_id, cluster.challenge(1), limitedUse=True)
    answer = cluster.post(1, "/v1/assertions", body)
    assert answer.status_code == 200, answer.text
    consume = {"token": answer.json()["appToken"], "consume": True}
    responses = _spread(cluster, "/v1/tokens/verify", [consume] * COPIES)
    assert Counter(r.status_code for r in responses) == Counter({200: 1, 409: COPIES - 1})
    assert {error_code(r) for r in responses if r.status_code == 409} == {"token.consumed"}


def test_key_registered_on_one_instance_asserts_on_the_others(cluster: Cluster) -> None:
    phone = cluster.iphone()
    key_id = cluster.register(0, phone)
    # Challenges issued by one instance are consumed on another.
    first = cluster.assertion_body(phone, key_id, cluster.challenge(0))
    on_second = cluster.post(1, "/v1/assertions", first)
    assert on_second.status_code == 200, on_second.text
    second = cluster.assertion_body(phone, key_id, cluster.challenge(1))
    on_third = cluster.post(2, "/v1/assertions", second)
    assert on_third.status_code == 200, on_third.text
    assert (on_second.json()["counter"], on_third.json()["counter"]) == (1, 2)
    # A replay on any instance is refused: the challenge is used, the counter has moved on.
    for index in range(INSTANCES):
        replay = cluster.post(index, "/v1/assertions", second)
        assert (replay.status_code, error_code(replay)) == (409, "challenge.consumed")
    assert {_stored_counter(cluster, i, key_id) for i in range(INSTANCES)} == {2}
    # The app token from instance 3 verifies on instance 1.
    verified = cluster.post(0, "/v1/tokens/verify", {"token": on_third.json()["appToken"]})
    assert verified.status_code == 200, verified.text
    assert verified.json()["claims"]["sub"] == phone.app_id


def test_signing_key_rotated_on_one_instance_is_served_by_all(cluster: Cluster) -> None:
    phone = cluster.iphone()
    key_id = cluster.register(0, phone)
    old = cluster.post(
        0, "/v1/assertions", cluster.assertion_body(phone, key_id, cluster.challenge(0))
    )
    assert old.status_code == 200, old.text
    old_token = old.json()["appToken"]
    old_kid = _kid(old_token)

    rotated = cluster.post(1, "/v1/admin/signing-keys/rotate", headers=cluster.admin())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["next"]
    assert new_kid not in (None, old_kid)

    # Publish first, sign later: from the rotation until every instance signs with the new
    # key, any token naming it must find it in the JWKS of every instance, read beforehand.
    started = time.monotonic()
    switched: set[int] = set()
    while len(switched) < INSTANCES:
        published = [_jwks_kids(cluster, index) for index in range(INSTANCES)]
        for index in set(range(INSTANCES)) - switched:
            challenge = cluster.challenge(
                index, client_address=f"203.0.113.{secrets.randbelow(250)}"
            )
            body = cluster.assertion_body(phone, key_id, challenge)
            fresh = cluster.post(index, "/v1/assertions", body)
            assert fresh.status_code == 200, fresh.text
            if _kid(fresh.json()["appToken"]) == new_kid:
                assert all(new_kid in kids for kids in published), published
                switched.add(index)
        limit = KEY_PUBLISH_SECONDS + KEY_REFRESH_SECONDS + 10
        assert time.monotonic() - started < limit, switched
        time.sleep(0.3)  # a few rounds only: the per-key verification limit is in force
    print(f"every instance signs with the rotated key after {time.monotonic() - started:.2f} s")

    jwks = cluster.instances[2].client.get("/.well-known/jwks.json").json()
    for index in range(INSTANCES):
        # The old key is still published, and the old token still verifies everywhere.
        assert {old_kid, new_kid} <= _jwks_kids(cluster, index)
        verified = cluster.post(index, "/v1/tokens/verify", {"token": old_token})
        assert verified.status_code == 200, verified.text
        # New tokens from every instance are signed with the new key (and verify with it).
        fresh = cluster.post(
            index,
            "/v1/assertions",
            cluster.assertion_body(phone, key_id, cluster.challenge(index)),
        )
        assert fresh.status_code == 200, fresh.text
        assert _kid(fresh.json()["appToken"]) == new_kid
        # An API verifying locally with the JWKS of one instance accepts both.
        verifier = AppTokenVerifier(StaticJwks(jwks), issuer=ISSUER, audience=ISSUER)
        assert verifier.verify(fresh.json()["appToken"]).subject == phone.app_id
    assert AppTokenVerifier(StaticJwks(jwks), issuer=ISSUER, audience=ISSUER).verify(old_token)


def test_signing_key_rotated_with_the_cli_on_the_store_reaches_every_instance(
    cluster: Cluster,
) -> None:
    before = _jwks_kids(cluster, 0)
    command = ["signing-key", "rotate", "--config", str(cluster.config)]
    rotated = subprocess.run(
        [sys.executable, "-m", "appintegrity", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("APPINTEGRITY_")},
    )
    assert rotated.returncode == 0, rotated.stderr
    started = time.monotonic()
    while True:
        added = [_jwks_kids(cluster, i) - before for i in range(INSTANCES)]
        if all(added):
            break
        assert time.monotonic() - started < KEY_REFRESH_SECONDS + 10, added
        time.sleep(0.02)
    (new_kid,) = set.union(*added)
    assert all(new == {new_kid} for new in added)
    phone = cluster.iphone()
    key_id = cluster.register(2, phone)
    time.sleep(KEY_PUBLISH_SECONDS)  # published everywhere; now it signs everywhere
    for index in range(INSTANCES):
        body = cluster.assertion_body(phone, key_id, cluster.challenge(index))
        answer = cluster.post(index, "/v1/assertions", body)
        assert answer.status_code == 200, answer.text
        assert _kid(answer.json()["appToken"]) == new_kid


def _outside_window_edge(margin: float = 8.0) -> None:
    """Rate limits count in fixed 60-second windows: start a burst well inside one."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


def test_challenge_rate_limit_counts_all_instances_together(cluster: Cluster) -> None:
    # The instances trust X-Forwarded-For from 127.0.0.1 (the load balancer's address).
    headers = {"X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}"}
    total = CHALLENGES_PER_MINUTE_PER_IP * INSTANCES
    targets = [(cluster.urls[i % INSTANCES], "/v1/challenges", {}) for i in range(total)]
    _outside_window_edge()
    responses = asyncio.run(post_together(targets, headers=headers))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter(
        {201: CHALLENGES_PER_MINUTE_PER_IP, 429: total - CHALLENGES_PER_MINUTE_PER_IP}
    ), statuses
    refused = [r for r in responses if r.status_code == 429]
    assert {error_code(r) for r in refused} == {"rate.limited"}
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)


def test_verification_rate_limit_per_key_counts_all_instances_together(cluster: Cluster) -> None:
    _outside_window_edge()
    phone = cluster.iphone()
    key_id = cluster.register(0, phone)  # the key's first verified request
    total = VERIFICATIONS_PER_MINUTE_PER_KEY + 20
    statuses: list[int] = []
    codes: set[str] = set()
    for index in range(total):  # genuine assertions, in turn on every instance
        challenge = cluster.challenge(index, client_address=f"192.0.2.{secrets.randbelow(250)}")
        response = cluster.post(
            index, "/v1/assertions", cluster.assertion_body(phone, key_id, challenge)
        )
        statuses.append(response.status_code)
        if response.status_code != 200:
            codes.add(error_code(response))
    # The limit counts verified requests of this key on all instances together.
    allowed = VERIFICATIONS_PER_MINUTE_PER_KEY - 1
    assert Counter(statuses) == Counter({200: allowed, 429: total - allowed}), Counter(statuses)
    assert statuses[:allowed] == [200] * allowed
    assert codes == {"rate.limited"}
