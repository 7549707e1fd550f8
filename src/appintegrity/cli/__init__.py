"""The ``appintegrity`` command line: each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

CONFIG_ENV = "APPINTEGRITY_CONFIG"
"""The environment variable naming the service config file when ``--config`` is not given."""

# Each module defines ``register(subparsers)`` adding its subcommands; a subcommand's
# parser sets ``func`` to a callable taking the parsed namespace and returning an exit status.
SUBCOMMAND_MODULES = [
    "appintegrity.cli.verify",
    "appintegrity.cli.inspect",
    "appintegrity.cli.serve",
    "appintegrity.cli.admin",
    "appintegrity.cli.demo",
    "appintegrity.cli.db",
    "appintegrity.cli.receipts",
]


def add_config_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE``, defaulting to ``$APPINTEGRITY_CONFIG``; ``what`` says what it is for."""
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV),
        help=f"{what} (default: ${CONFIG_ENV})",
    )


MAX_LIMIT = 1_000_000
"""The largest ``--limit`` the commands take: far above any listing a person reads, and far
below the integers the stores' ``LIMIT`` clauses overflow on."""


def int_in_range(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``minimum`` to ``maximum`` (a usage error, exit 2,
    otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, not {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appintegrity",
        description="Verify App Attest and Play Integrity objects, and run the integrity service.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = func(args)
    except BrokenPipeError:
        # The reader went away (`appintegrity verify … | head`): stop quietly, as Unix tools
        # do, instead of a traceback; stdout is pointed at /dev/null so the flush at exit
        # does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
