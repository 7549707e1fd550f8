"""``appintegrity db migrate|purge``: schema upgrades and housekeeping for a store URL.

The service migrates on start too; ``db migrate`` lets a deployment do it once, before
starting several instances (it is idempotent and safe to run concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from appintegrity.errors import ConfigError, StoreUnavailableError
from appintegrity.store import open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="create, upgrade or clean the store")
    commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    migrate = commands.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    _store_arguments(migrate)
    migrate.set_defaults(func=_migrate)

    purge = commands.add_parser("purge", help="delete expired challenges and token ids")
    _store_arguments(purge)
    purge.set_defaults(func=_purge)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="sqlite:///file.db, postgresql://… or redis://…",
    )
    parser.add_argument(
        "--cache", metavar="URL", help="redis://… for hot state (with a postgresql:// store)"
    )


def _migrate(args: argparse.Namespace) -> int:
    async def run() -> str:
        store = open_store(args.store, args.cache)
        try:
            await store.migrate()
        finally:
            await store.close()
        return f"schema up to date: {store!r}"

    return _report(run)


def _purge(args: argparse.Namespace) -> int:
    async def run() -> str:
        store = open_store(args.store, args.cache)
        try:
            await store.migrate()
            gone = await store.purge_expired(datetime.now(UTC))
        finally:
            await store.close()
        return f"purged {gone} expired rows"

    return _report(run)


def _report(run: Callable[[], Coroutine[Any, Any, str]]) -> int:
    try:
        message = asyncio.run(run())
    except ConfigError as exc:
        print(f"appintegrity db: {exc.message}", file=sys.stderr)
        return 2
    except StoreUnavailableError as exc:
        print(f"appintegrity db: {exc.message}", file=sys.stderr)
        return 1
    print(message)
    return 0
