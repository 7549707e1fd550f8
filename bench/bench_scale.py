"""The service's load run (issue 4) on PostgreSQL + Redis, with 1 and with 3 instances (issue 6).

Same load as ``bench_service`` (its ``run_load``): ``appintegrity serve`` subprocesses sharing
the store, a separate load-generator process with 8 keep-alive connections spread over the
instances, each driving its own software iPhone. Durable state goes to a fresh PostgreSQL
schema, hot state (challenges, rate limits, consumed token ids) to a fresh Redis key prefix;
both are removed afterwards.

One instance is one Python event loop, so it uses one core at most; on a 2-core machine that
also runs PostgreSQL, Redis and the load generator, 3 instances mostly show the second core put
to work and what the shared stores cost per exchange, not how far more hardware would scale.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

from bench.bench_service import LoadResult, run_load
from bench.harness import header, row

POSTGRES_URL = os.environ.get(
    "APPINTEGRITY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("APPINTEGRITY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
INSTANCE_COUNTS = (1, 3)
CONNECTIONS = 8  # as bench_service's SQLite run, so the figures compare


def _unreachable(name: str, url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError:
        return f"{name} not reachable on {host}:{port}"


def _with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def _drop(schema: str, prefix: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def load_on_shared_stores(instances: int) -> LoadResult:
    """One load run against ``instances`` services on a fresh schema and key prefix."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench{uuid.uuid4().hex[:12]}:"
    try:
        load = run_load(
            _with_param(POSTGRES_URL, "schema", schema),
            _with_param(REDIS_URL, "prefix", prefix),
            instances,
            connections=CONNECTIONS,
            label=f"PostgreSQL + Redis, {instances} instance{'s' if instances > 1 else ''}",
        )
    finally:
        _drop(schema, prefix)
    return load.exchanges


def _print(result: LoadResult) -> None:
    row(f"assertion exchanges/s ({result.label})", result.per_second)
    print(
        f"  {'  latency p50 / p99':<58} {result.p50_ms:>8.1f} / {result.p99_ms:.1f} ms"
        f"   ({result.requests} requests, {result.errors} errors)"
    )


def main() -> None:
    header("Integrity service on PostgreSQL + Redis, 1 and 3 instances (issue 6)")
    reasons = [
        reason
        for reason in (
            _unreachable("PostgreSQL", POSTGRES_URL, 5432),
            _unreachable("Redis", REDIS_URL, 6379),
        )
        if reason is not None
    ]
    if reasons:
        print(f"  skipped: {'; '.join(reasons)} (start them, or see .ci/run)")
        return
    print(
        f"  the load of bench_service: raw HTTP/1.1 keep-alive, {CONNECTIONS} connections spread\n"
        f"  over the instances, closed loop; {os.cpu_count()} CPU cores shared by the instances,\n"
        "  PostgreSQL, Redis and the load generator."
    )
    results = [load_on_shared_stores(count) for count in INSTANCE_COUNTS]
    for result in results:
        _print(result)
    single, several = results[0], results[-1]
    if single.per_second:
        print(
            f"  {f'  {several.label} / 1 instance':<58} "
            f"{several.per_second / single.per_second:>12.1%}"
        )


if __name__ == "__main__":
    main()
