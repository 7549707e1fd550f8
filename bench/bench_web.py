"""Per-request overhead of the ASGI middleware, called directly as an ASGI app (no server).

In one run: the raw ES256 verify, a bare route, the same route behind the middleware with a
cached token, and with first-seen tokens, timed in alternating rounds (best round kept).
Overhead = protected time − bare time. Targets (issue 5): cached ≤ 20 µs; first-seen
≤ 1.3 × the raw ES256 verify time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

from appintegrity.tokens import AppTokenVerifier, SigningKey, StaticJwks, build_jwks
from appintegrity.web import Protector, RoutePolicy, WebMetrics
from appintegrity.web.asgi import AppIntegrityMiddleware
from bench.bench_tokens import AUD, FIRST_SEEN_LIMIT, ISS, ROUNDS, issue_tokens, raw_verifier
from bench.harness import header, pin_to_one_core

HEADER = b"x-app-integrity"
CACHED_TARGET_US = 20.0
Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


async def bare(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"unexpected status {message['status']}")


def _scope(token: str | None) -> Scope:
    headers = [(b"host", b"api.example.com"), (b"user-agent", b"bench")]
    if token is not None:
        headers.append((HEADER, token.encode()))
    return {"type": "http", "method": "POST", "path": "/purchases", "headers": headers}


def requests_us(loop: asyncio.AbstractEventLoop, app: App, tokens: list[str | None]) -> float:
    """Mean µs per request over ``tokens`` (one request each, fresh scope each)."""

    async def run() -> float:
        scopes = [_scope(t) for t in tokens]
        started = time.perf_counter()
        for scope in scopes:
            await app(scope, _receive, _send)
        return (time.perf_counter() - started) / len(scopes) * 1e6

    return loop.run_until_complete(run())


def main() -> None:
    pin_to_one_core()
    key = SigningKey.generate()
    fresh = issue_tokens(key, 400)
    verifier = AppTokenVerifier(StaticJwks(build_jwks([key])), issuer=ISS, audience=AUD)
    protector = Protector(verifier, metrics=WebMetrics(CollectorRegistry()))
    protected = AppIntegrityMiddleware(bare, protector, routes={"/purchases": RoutePolicy()})
    raw = raw_verifier(key, fresh)
    cached_token: list[str | None] = [fresh[0]] * 20_000
    nothing: list[str | None] = [None] * 20_000
    first_seen: list[str | None] = list(fresh)
    loop = asyncio.new_event_loop()
    best = {"raw": float("inf"), "bare": float("inf"), "cached": float("inf")}
    best["first"] = float("inf")
    try:
        requests_us(loop, protected, [fresh[0]])
        for _ in range(ROUNDS):
            started = time.perf_counter()
            raw()
            best["raw"] = min(best["raw"], (time.perf_counter() - started) / len(fresh) * 1e6)
            best["bare"] = min(best["bare"], requests_us(loop, bare, nothing))
            best["cached"] = min(best["cached"], requests_us(loop, protected, cached_token))
            verifier.clear_cache()  # every token below is seen for the first time
            best["first"] = min(best["first"], requests_us(loop, protected, first_seen))
    finally:
        loop.close()

    raw_us, bare_us = best["raw"], best["bare"]
    cached_overhead = best["cached"] - bare_us
    first_overhead = best["first"] - bare_us
    header("Web: ASGI middleware overhead per request (direct ASGI calls, no server)")
    print(f"  {'raw cryptography ES256 verify':<58} {raw_us:>10.2f} µs")
    print(f"  {'bare route':<58} {bare_us:>10.2f} µs")
    print(f"  {'protected route, cached token':<58} {best['cached']:>10.2f} µs")
    print(f"  {'protected route, first-seen token':<58} {best['first']:>10.2f} µs")
    verdict = "met" if cached_overhead <= CACHED_TARGET_US else "NOT met"
    print(
        f"  {'overhead, cached token':<58} {cached_overhead:>10.2f} µs"
        f"  (target <= {CACHED_TARGET_US:.0f} µs: {verdict})"
    )
    limit = FIRST_SEEN_LIMIT * raw_us
    verdict = "met" if first_overhead <= limit else "NOT met"
    print(
        f"  {'overhead, first-seen token':<58} {first_overhead:>10.2f} µs"
        f"  = {first_overhead / raw_us:.2f}x raw (target <= {FIRST_SEEN_LIMIT}x: {verdict})"
    )


if __name__ == "__main__":
    main()
