"""The integrity service under HTTP load on loopback (issue 4), and app-token verification.

**Assertion exchange** = one ``POST /v1/assertions`` (iOS, App Attest) whose challenge was
obtained beforehand: consume the challenge, load the key, verify the assertion signature,
advance the counter, sign an app token. Challenge issuance is measured separately.

The service runs as ``appintegrity serve`` subprocesses (``instances`` of them on their own
ports, sharing the store); the load generator is a separate process speaking raw HTTP/1.1 with
keep-alive over ``connections`` connections (closed loop: each sends its next request when the
previous answer arrives). Each connection drives its own pre-registered software iPhone, so
counters arrive in order. Assertions are signed before the clock starts.

``run_load(store_url, cache_url, instances)`` is reusable: issue 6 calls it for PostgreSQL +
Redis with 1 and 3 instances.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import header, ops_per_second, row

ISSUER = "https://bench.appintegrity.invalid"
IOS_APP = "BENCH12345.com.example.bench"
ADMIN_KEY = "bench-admin-key-0123456789"
TARGET_EXCHANGES_PER_SECOND = 1000
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class LoadResult:
    label: str
    requests: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ServiceLoad:
    exchanges: LoadResult
    challenges: LoadResult
    tokens: list[str]
    jwks: dict[str, Any]


# -- the service ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(directory: Path, store_url: str, cache_url: str | None, root_pem: bytes) -> Path:
    (directory / "bench-root.pem").write_bytes(root_pem)
    lines = [
        "[server]",
        f"store = {json.dumps(store_url)}",
        f"issuer = {json.dumps(ISSUER)}",
        f"admin_key = {json.dumps(ADMIN_KEY)}",
    ]
    if cache_url:
        lines.append(f"cache = {json.dumps(cache_url)}")
    lines += [
        "[tokens]",
        "ttl_seconds = 3600",
        "[limits]",
        "challenges_per_minute_per_ip = 0",
        "verifications_per_minute_per_ip = 0",
        "verifications_per_minute_per_key = 0",
        "[[apps]]",
        f"id = {json.dumps(IOS_APP)}",
        'platform = "ios"',
        'trust_roots = ["bench-root.pem"]',
    ]
    path = directory / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_instances(
    config: Path, instances: int, workers: int = 1
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    import httpx

    processes, urls = [], []
    for _ in range(instances):
        port = _free_port()
        env = {**os.environ, "PYTHONOPTIMIZE": "1"}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "appintegrity", "serve", "--config", str(config),
                    "--port", str(port), "--log-level", "warning", "--workers", str(workers),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    for process, url in zip(processes, urls, strict=True):
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service instance {url} exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service instance {url} did not start")
            time.sleep(0.1)
    return processes, urls


# -- the load generator (its own process) --------------------------------------------------------


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: enough for JSON POSTs with Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> _Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    def request_bytes(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def post(self, path: str, document: object) -> tuple[int, Any]:
        status, body = await self.send(self.request_bytes(path, json.dumps(document).encode()))
        return status, json.loads(body) if body else None

    def close(self) -> None:
        self.writer.close()


async def _client_side(
    urls: list[str], ca: Any, connections: int, per_connection: int, warmup: int
) -> dict[str, Any]:
    from appintegrity.encoding import b64_encode
    from appintegrity.testing.ios import SoftwareIPhone

    conns = [await _Connection.open(urls[i % len(urls)]) for i in range(connections)]

    async def prepare(conn: _Connection) -> tuple[list[bytes], str]:
        phone = SoftwareIPhone(IOS_APP, ca=ca)
        key_id = phone.generate_key()
        _, ch = await conn.post("/v1/challenges", {"purpose": "attestation"})
        status, answer = await conn.post(
            "/v1/registrations",
            {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "challenge": ch["challenge"],
                "token": b64_encode(phone.attest_key(key_id, ch["challenge"])),
            },
        )
        if status != 201:
            raise RuntimeError(f"registration failed: {status} {answer}")
        requests = []
        challenge_raw = conn.request_bytes("/v1/challenges", b'{"purpose":"assertion"}')
        for _ in range(per_connection + warmup):
            _, body = await conn.send(challenge_raw)
            challenge = json.loads(body)["challenge"]
            payload = json.dumps({"action": "bench", "challenge": challenge})
            document = {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "payload": payload,
                "token": b64_encode(phone.generate_assertion(key_id, payload)),
            }
            requests.append(conn.request_bytes("/v1/assertions", json.dumps(document).encode()))
        return requests, str(answer["appToken"])

    started = time.perf_counter()
    prepared = await asyncio.gather(*(prepare(c) for c in conns))
    prepare_seconds = time.perf_counter() - started

    # Challenge issuance on its own (closed loop over all connections).
    challenge_latencies: list[float] = []

    async def challenges(conn: _Connection, count: int) -> None:
        raw = conn.request_bytes("/v1/challenges", b"{}")
        for _ in range(count):
            t_start = time.perf_counter()
            await conn.send(raw)
            challenge_latencies.append(time.perf_counter() - t_start)

    t0 = time.perf_counter()
    await asyncio.gather(*(challenges(c, 100) for c in conns))
    challenge_seconds = time.perf_counter() - t0

    latencies: list[float] = []
    errors = 0
    measured_start: list[float] = []

    async def blast(conn: _Connection, requests: list[bytes]) -> None:
        nonlocal errors
        for index, raw in enumerate(requests):
            if index == warmup:
                measured_start.append(time.perf_counter())
            t_start = time.perf_counter()
            status, _ = await conn.send(raw)
            if index >= warmup:
                latencies.append(time.perf_counter() - t_start)
                if status != 200:
                    errors += 1

    await asyncio.gather(*(blast(c, reqs) for c, (reqs, _) in zip(conns, prepared, strict=True)))
    seconds = time.perf_counter() - max(measured_start)
    for conn in conns:
        conn.close()
    return {
        "latencies": latencies,
        "errors": errors,
        "seconds": seconds,
        "challenge_latencies": challenge_latencies,
        "challenge_seconds": challenge_seconds,
        "prepare_seconds": prepare_seconds,
        "tokens": [token for _, token in prepared],
    }


def _child(
    urls: list[str], ca: Any, connections: int, per_connection: int, warmup: int, out: Any
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_client_side(urls, ca, connections, per_connection, warmup)))
    out.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_load(
    store_url: str | None = None,
    cache_url: str | None = None,
    instances: int = 1,
    *,
    workers: int = 1,
    connections: int = 8,
    per_connection: int = 1000,
    warmup: int = 20,
    label: str | None = None,
) -> ServiceLoad:
    """Start ``instances`` services on ``store_url`` (a temporary SQLite file by default) and
    load them. Returns the assertion-exchange and challenge figures, with sample app tokens
    and the JWKS that verifies them.

    A closed loop only measures the peak when requests overlap; ``connections`` keeps enough
    of them in flight. Note that the measured window starts when the slowest connection has
    finished its warm-up, so the rate is over the overlapping part of the run.
    """
    import httpx

    from appintegrity.testing.ios import AppAttestCA

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        directory = Path(tmp)
        store = store_url or f"sqlite:///{directory / 'bench.db'}"
        ca = AppAttestCA.generate()
        config = _write_config(directory, store, cache_url, ca.root_pem)
        processes, urls = _start_instances(config, instances, workers)
        try:
            context = multiprocessing.get_context("fork")
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(
                target=_child, args=(urls, ca, connections, per_connection, warmup, sender)
            )
            child.start()
            result: dict[str, Any] = receiver.recv()
            child.join()
            jwks = httpx.get(f"{urls[0]}/.well-known/jwks.json", timeout=10).json()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)
    name = label or (
        f"{store.split(':', 1)[0]}{'+redis' if cache_url else ''}, {instances} instance(s)"
        + (f" x {workers} workers" if workers > 1 else "")
    )
    latencies = result["latencies"]
    exchanges = LoadResult(
        label=name,
        requests=len(latencies),
        errors=result["errors"],
        seconds=result["seconds"],
        per_second=len(latencies) / result["seconds"],
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
    )
    challenge_latencies = result["challenge_latencies"]
    challenges = LoadResult(
        label=name,
        requests=len(challenge_latencies),
        errors=0,
        seconds=result["challenge_seconds"],
        per_second=len(challenge_latencies) / result["challenge_seconds"],
        p50_ms=_percentile(challenge_latencies, 0.50) * 1000,
        p99_ms=_percentile(challenge_latencies, 0.99) * 1000,
    )
    return ServiceLoad(exchanges, challenges, result["tokens"], jwks)


def report(exchanges: LoadResult, challenges: LoadResult) -> None:
    met = (
        exchanges.per_second >= TARGET_EXCHANGES_PER_SECOND
        and exchanges.p99_ms < TARGET_P99_MS
        and exchanges.errors == 0
    )
    row(f"assertion exchanges/s ({exchanges.label})", exchanges.per_second)
    print(
        f"  {'  latency p50 / p99':<58} {exchanges.p50_ms:>8.1f} / {exchanges.p99_ms:.1f} ms"
        f"   ({exchanges.requests} requests, {exchanges.errors} errors)"
    )
    print(f"  {'  target >= 1,000/s with p99 < 50 ms':<58} {'met' if met else 'NOT met':>12}")
    row(f"challenges issued/s ({challenges.label})", challenges.per_second)
    print(f"  {'  latency p50 / p99':<58} {challenges.p50_ms:>8.1f} / {challenges.p99_ms:.1f} ms")


def bench_token_verification(tokens: list[str], jwks: dict[str, Any]) -> None:
    """The served app tokens verified in-process against the served JWKS (what a Python API
    does per request): first seen (ES256 signature + claims) and cached."""
    from appintegrity.tokens import AppTokenVerifier, StaticJwks

    source = StaticJwks(jwks)
    uncached = AppTokenVerifier(source, issuer=ISSUER, audience=ISSUER, cache_size=0)
    cached = AppTokenVerifier(source, issuer=ISSUER, audience=ISSUER)
    for token in tokens:
        uncached.verify(token)
    position = iter(range(10**12))

    def first_seen() -> None:
        uncached.verify(tokens[next(position) % len(tokens)])

    def cache_hit() -> None:
        cached.verify(tokens[next(position) % len(tokens)])

    row("app tokens verified/s in-process (first seen: ES256 + claims)", ops_per_second(first_seen))
    row("app tokens verified/s in-process (cached)", ops_per_second(cache_hit))


def main() -> None:
    header("Integrity service over HTTP on loopback (SQLite, 1 instance)")
    print(
        "  assertion exchange = one POST /v1/assertions (iOS) with a challenge fetched\n"
        "  beforehand: challenge consumed, key loaded, signature verified, counter advanced,\n"
        "  app token signed. Load generator: a separate process, raw HTTP/1.1 keep-alive,\n"
        f"  8 connections, closed loop; {os.cpu_count()} CPU cores shared with the service."
    )
    load = run_load()
    report(load.exchanges, load.challenges)
    bench_token_verification(load.tokens, load.jwks)


if __name__ == "__main__":
    main()
