"""Redis or PostgreSQL goes away under load: the instances fail closed, then recover alone.

Two service processes reach PostgreSQL and Redis through TCP proxies. While software iPhones
run challenge → assertion exchanges against both instances, one proxy stops (open connections
reset, new ones refused: what a crashed server looks like to a client) and starts again two
seconds later. Proven: every request that needed the missing backend got 503 with the JSON
error ``store.unavailable``; no assertion was accepted twice, before, during or after; no
counter went backwards; the same processes serve again without being restarted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from appintegrity.testing.ios import SoftwareIPhone

from .cluster import (
    Cluster,
    ProxyThread,
    SharedStores,
    error_code,
    through_port,
    with_param,
    write_config,
)
from .conftest import LazyCluster

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

INSTANCES = 2
WORKERS = 4
OUTAGE_SECONDS = 2.0
RECOVERY_TIMEOUT = 30.0


@dataclass
class Outage:
    cluster: Cluster
    proxies: dict[str, ProxyThread]


@pytest.fixture
def outage(lazy_cluster: LazyCluster, shared_stores: SharedStores) -> Outage:
    def build(holder: LazyCluster) -> Cluster:
        proxies = holder.proxies
        pg, rd = urlsplit(shared_stores.postgres_url), urlsplit(shared_stores.redis_url)
        proxies["postgres"] = ProxyThread(pg.hostname or "127.0.0.1", pg.port or 5432)
        proxies["redis"] = ProxyThread(rd.hostname or "127.0.0.1", rd.port or 6379)
        for proxy in proxies.values():
            holder.on_close(proxy.close)
            proxy.start()
        # Short timeouts so an outage is reported quickly instead of holding requests.
        store_url = through_port(shared_stores.store_url, proxies["postgres"].port)
        store_url = with_param(with_param(store_url, "pool_timeout", "1"), "connect_timeout", "1")
        cache_url = with_param(
            through_port(shared_stores.cache_url, proxies["redis"].port), "timeout", "1"
        )
        config = write_config(
            holder.directory, store_url=store_url, cache_url=cache_url, ca=holder.ca, limits={}
        )
        return Cluster(holder.directory, config, holder.ca, INSTANCES)

    cluster = lazy_cluster.get(build)
    cluster.wait_healthy()
    return Outage(cluster, lazy_cluster.proxies)


@dataclass(frozen=True)
class Attempt:
    kind: str  # "challenge" or "assertion"
    worker: int
    sent: float
    received: float
    status: int  # 0: no HTTP answer at all
    code: str | None = None
    body: dict[str, object] | None = None
    counter: int | None = None


@dataclass
class Load:
    """``WORKERS`` threads, each a software iPhone with one registered key, looping over the
    instances: challenge from instance i, assertion on instance i + 1."""

    cluster: Cluster
    attempts: list[Attempt] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: list[tuple[SoftwareIPhone, str]] = field(default_factory=list)

    def start(self) -> list[threading.Thread]:
        for index in range(WORKERS):
            phone = self.cluster.iphone()
            self.keys.append((phone, self.cluster.register(index, phone)))
        threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _record(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def _post(
        self, client: httpx.Client, kind: str, worker: int, path: str, body: dict[str, object]
    ) -> tuple[Attempt, httpx.Response | None]:
        sent = time.monotonic()
        try:
            response = client.post(path, json=body)
        except httpx.HTTPError:
            attempt = Attempt(kind, worker, sent, time.monotonic(), 0, body=body)
            self._record(attempt)
            return attempt, None
        code, counter = None, None
        try:
            document = response.json()
        except ValueError:
            code = "<not JSON>"  # checked by the test: every error must be a JSON error
        else:
            if response.status_code >= 400:
                error = document.get("error") if isinstance(document, dict) else None
                code = str(error.get("code")) if isinstance(error, dict) else "<no error code>"
            elif response.status_code == 200:
                counter = document.get("counter")
        attempt = Attempt(
            kind, worker, sent, time.monotonic(), response.status_code, code, body, counter
        )
        self._record(attempt)
        return attempt, response

    def _run(self, worker: int) -> None:
        phone, key_id = self.keys[worker]
        clients = [httpx.Client(base_url=url, timeout=20) for url in self.cluster.urls]
        turn = worker
        try:
            while not self.stop.is_set():
                issuer, verifier = clients[turn % INSTANCES], clients[(turn + 1) % INSTANCES]
                turn += 1
                _, answer = self._post(
                    issuer, "challenge", worker, "/v1/challenges", {"purpose": "assertion"}
                )
                if answer is None or answer.status_code != 201:
                    time.sleep(0.05)
                    continue
                body = Cluster.assertion_body(phone, key_id, answer.json()["challenge"])
                attempt, _ = self._post(verifier, "assertion", worker, "/v1/assertions", body)
                if attempt.status != 200:
                    time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def accepted(self, worker: int | None = None, after: float = 0.0) -> list[Attempt]:
        with self.lock:
            return [
                a
                for a in self.attempts
                if a.kind == "assertion"
                and a.status == 200
                and (worker is None or a.worker == worker)
                and a.sent >= after
            ]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_backend_outage_under_load_fails_closed_and_recovers(outage: Outage, backend: str) -> None:
    cluster, proxy = outage.cluster, outage.proxies[backend]
    pids = [i.process.pid for i in cluster.instances]
    load = Load(cluster)
    threads = load.start()
    try:
        _wait_for(
            lambda: all(len(load.accepted(w)) >= 2 for w in range(WORKERS)),
            RECOVERY_TIMEOUT,
            "the load to get going",
        )
        proxy.stop()
        down_at = time.monotonic()
        try:
            time.sleep(OUTAGE_SECONDS / 2)
            for instance in cluster.instances:
                health = instance.client.get("/healthz")
                assert (health.status_code, error_code(health)) == (503, "store.unavailable")
            time.sleep(OUTAGE_SECONDS / 2)
        finally:
            up_at = time.monotonic()
            proxy.start()
        recovery = _wait_for(
            lambda: all(load.accepted(w, after=up_at) for w in range(WORKERS)),
            RECOVERY_TIMEOUT,
            "every worker to be served again",
        )
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    attempts = list(load.attempts)
    statuses = Counter(a.status for a in attempts)
    print(f"{backend}: {dict(statuses)}; served again {recovery:.2f} s after it came back")
    # Every answer was a success or a clean 503; no 500, no dropped connection.
    assert set(statuses) <= {200, 201, 503}, statuses
    assert {a.code for a in attempts if a.status == 503} == {"store.unavailable"}
    # Requests made while the backend was away failed closed.
    during = [a for a in attempts if a.sent >= down_at and a.received <= up_at]
    refused_assertions = [a for a in during if a.kind == "assertion"]
    assert {a.status for a in refused_assertions} <= {503}
    if backend == "redis":
        # Challenges live in Redis: none can be issued.
        assert {a.status for a in during} == {503}
    else:
        # Challenges (Redis) are still issued, but no assertion gets past the key lookup.
        assert refused_assertions, "the load made no assertion during the outage"
    assert statuses[503] > 0
    # The same processes serve again: nobody restarted them.
    assert [i.process.pid for i in cluster.instances] == pids
    assert all(i.process.poll() is None for i in cluster.instances)
    for instance in cluster.instances:
        assert instance.client.get("/healthz").status_code == 200

    # Nothing accepted twice: accepted counters are unique and rising per key, the stored
    # counter is the highest accepted one, and every assertion sent, replayed now on either
    # instance, is refused.
    keys = cluster.instances[0].client.get("/v1/admin/keys", headers=cluster.admin()).json()
    stored = {k["keyId"]: k["counter"] for k in keys["keys"]}
    for worker, (phone, key_id) in enumerate(load.keys):
        # One more exchange per key, so every earlier assertion has a lower counter.
        final = cluster.post(
            worker,
            "/v1/assertions",
            Cluster.assertion_body(phone, key_id, cluster.challenge(worker)),
        )
        assert final.status_code == 200, final.text
        counters = [a.counter for a in sorted(load.accepted(worker), key=lambda a: a.received)]
        assert counters == sorted(set(counters)), counters
        assert stored[key_id] == counters[-1]
        assert final.json()["counter"] > counters[-1]
    sent = [a.body for a in attempts if a.kind == "assertion" and a.body is not None]
    for index, body in enumerate(sent):
        replay = cluster.post(index, "/v1/assertions", body)
        assert (replay.status_code, error_code(replay)) in {
            (409, "challenge.consumed"),
            (409, "apple.counter_invalid"),
        }, replay.text
