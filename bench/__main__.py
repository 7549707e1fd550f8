"""`make bench`: every benchmark module in turn, each printing ratios against its raw primitive."""

from __future__ import annotations

import importlib
import sys

MODULES = [
    "bench.bench_apple",
    "bench.bench_google",
    "bench.bench_tokens",
    "bench.bench_web",
    "bench.bench_service",
    "bench.bench_scale",
]


def main() -> int:
    only = sys.argv[1:]
    for name in MODULES:
        if only and not any(part in name for part in only):
            continue
        module = importlib.import_module(name)
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
