"""App-token verification: raw ES256 beside AppTokenVerifier, first-seen and cached.

The raw primitive and the verifier are timed in alternating short rounds and the best round
of each is kept, so a burst of load on the machine cannot favour one side of the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from appintegrity.encoding import b64decode_lenient
from appintegrity.tokens import AppTokenVerifier, SigningKey, StaticJwks, TokenIssuer, build_jwks
from bench.harness import header, pin_to_one_core, row

ISS = "https://integrity.example.com"
AUD = "api.example.com"
FIRST_SEEN_LIMIT = 1.3  # first-seen verify may cost at most 1.3 x a raw ES256 verify
ROUNDS = 9


def issue_tokens(key: SigningKey, count: int) -> list[str]:
    issuer = TokenIssuer(key, issuer=ISS, audience=AUD)
    now = datetime.now(UTC)
    return [
        issuer.issue(
            subject="TEAM123456.com.example.app",
            platform="ios",
            decision="allow",
            ttl_seconds=3600,
            now=now,
        ).token
        for _ in range(count)
    ]


def raw_verifier(key: SigningKey, tokens: list[str]) -> Callable[[], None]:
    """The primitive over ``tokens``: one cryptography ES256 signature check each, nothing else."""
    public_key = key.private_key.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())
    prepared = []
    for token in tokens:
        signing_input, _, signature_b64 = token.rpartition(".")
        signature = b64decode_lenient(signature_b64)
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        prepared.append((der, signing_input.encode()))

    def run() -> None:
        for der, data in prepared:
            public_key.verify(der, data, algorithm)

    return run


def best_us_per_item(runs: dict[str, tuple[Callable[[], None], int]]) -> dict[str, float]:
    """Alternate the runs ``ROUNDS`` times; best µs per item for each."""
    best = {name: float("inf") for name in runs}
    for _ in range(ROUNDS):
        for name, (run, items) in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - started) / items * 1e6)
    return best


def main() -> None:
    pin_to_one_core()
    key = SigningKey.generate()
    tokens = issue_tokens(key, 400)
    jwks = StaticJwks(build_jwks([key]))
    # cache_size=0: every call is a full verification, as for a token seen the first time.
    uncached = AppTokenVerifier(jwks, issuer=ISS, audience=AUD, cache_size=0)
    cached = AppTokenVerifier(jwks, issuer=ISS, audience=AUD)
    token = tokens[0]
    cached.verify(token)

    def first_seen() -> None:
        for t in tokens:
            uncached.verify(t)

    def repeated() -> None:
        for _ in range(20_000):
            cached.verify(token)

    started = time.perf_counter()
    issue_tokens(key, 200)
    issue_us = (time.perf_counter() - started) / 200 * 1e6

    best = best_us_per_item(
        {
            "raw": (raw_verifier(key, tokens), len(tokens)),
            "first": (first_seen, len(tokens)),
            "cached": (repeated, 20_000),
        }
    )
    raw_us, first_us, cached_us = best["raw"], best["first"], best["cached"]
    header("App tokens (ES256): verify")
    row("raw cryptography ES256 verify", 1e6 / raw_us, "verifies/s")
    row("AppTokenVerifier.verify, first-seen token", 1e6 / first_us, "verifies/s")
    row("AppTokenVerifier.verify, cached token", 1e6 / cached_us, "verifies/s")
    row("TokenIssuer.issue", 1e6 / issue_us, "tokens/s")
    print(f"  raw {raw_us:.1f} µs, first-seen {first_us:.1f} µs, cached {cached_us:.2f} µs")
    verdict = "met" if first_us <= FIRST_SEEN_LIMIT * raw_us else "NOT met"
    print(
        f"  {'first-seen time / raw time':<58} {first_us / raw_us:>11.2f}x"
        f"  (target <= {FIRST_SEEN_LIMIT}x: {verdict})"
    )
    print(f"  {'cached time / raw time':<58} {cached_us / raw_us:>11.4f}x")


if __name__ == "__main__":
    main()
