"""Operator commands on the configured store: device keys, debug tokens, signing keys.

They work on the store directly (no running service needed), so they also work when the
service is down; running instances pick up changes on their next read (signing keys within
``key_refresh_seconds``). ``keys list|revoke`` and ``debug-token list|revoke`` refuse a SQLite
store whose file does not exist (exit 2) instead of creating an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from appintegrity.cli import CONFIG_ENV, MAX_LIMIT, add_config_argument, int_in_range
from appintegrity.errors import AppIntegrityError, ConfigError
from appintegrity.store.base import Store


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "service config file whose store to use")
    parser.add_argument("--store", help="store URL instead of the config's (sqlite:///…)")
    parser.add_argument("--cache", help="cache URL (redis://…) with --store postgresql://…")
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="list or revoke registered device keys")
    keys_sub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = keys_sub.add_parser("list", help="registered device keys, newest first")
    _common(p)
    p.add_argument("--app", help="only this app id")
    p.add_argument(
        "--limit",
        type=int_in_range(1, MAX_LIMIT),
        default=100,
        help=f"at most this many keys (1 to {MAX_LIMIT}, default 100)",
    )
    p.set_defaults(func=lambda a: _run(a, _keys_list), existing_store=True)
    p = keys_sub.add_parser("revoke", help="revoke a device key (its assertions are refused)")
    _common(p)
    p.add_argument("key_id")
    p.set_defaults(func=lambda a: _run(a, _keys_revoke), existing_store=True)

    debug = subparsers.add_parser("debug-token", help="debug tokens for simulators and CI")
    debug_sub = debug.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = debug_sub.add_parser(
        "create",
        help="create one; the secret is printed once (refused at the app's limit, default 20)",
    )
    _common(p)
    p.add_argument("--app", required=True, help="app id the token is for")
    p.add_argument("--name", required=True, help="who uses it, e.g. 'CI' or 'Ana's simulator'")
    p.set_defaults(func=lambda a: _run(a, _debug_create))
    p = debug_sub.add_parser("list", help="debug tokens (never their secrets)")
    _common(p)
    p.add_argument("--app", help="only this app id")
    p.set_defaults(func=lambda a: _run(a, _debug_list), existing_store=True)
    p = debug_sub.add_parser("revoke", help="revoke a debug token by its id")
    _common(p)
    p.add_argument("token_id")
    p.set_defaults(func=lambda a: _run(a, _debug_revoke), existing_store=True)

    signing = subparsers.add_parser("signing-key", help="app-token signing keys")
    signing_sub = signing.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = signing_sub.add_parser(
        "rotate",
        help="a new key, published now and signing after key_publish_seconds; old ones verify"
        " until their tokens expire",
    )
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _signing_rotate))
    p = signing_sub.add_parser("list", help="signing keys, newest first")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, _signing_list))


Action = Callable[[argparse.Namespace, Store], Awaitable[int]]


def _open(args: argparse.Namespace) -> Store:
    from appintegrity.store import open_store

    if args.store:
        _check_existing(args, args.store, "--store")
        return open_store(args.store, args.cache)
    if not args.config:
        raise ConfigError(f"give --config FILE (or ${CONFIG_ENV}) or --store URL")
    from appintegrity.service.config import load_config

    config = load_config(args.config)
    args.service_config = config
    _check_existing(args, config.server.store, f"the store of {args.config}")
    return open_store(config.server.store, config.server.cache)


def _check_existing(args: argparse.Namespace, url: str, where: str) -> None:
    """Commands that only read or change existing rows refuse a SQLite file that is not there:
    opening it would create an empty database, and a mistyped path would list nothing (or
    revoke nothing) instead of saying so."""
    from appintegrity.store.factory import sqlite_file

    path = sqlite_file(url) if getattr(args, "existing_store", False) else None
    if path is not None and not Path(path).exists():
        raise ConfigError(
            f"no SQLite database at {path} ({where}); `appintegrity db migrate --store URL`"
            " creates one"
        )


def _run(args: argparse.Namespace, action: Action) -> int:
    try:
        store = _open(args)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2

    async def main() -> int:
        try:
            await store.migrate()
            return await action(args, store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except AppIntegrityError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1


def _now() -> datetime:
    return datetime.now(UTC)


def _time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _print_rows(
    args: argparse.Namespace, rows: list[dict[str, object]], columns: list[str]
) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    widths = {
        c: max(len(c), *(len(str(r[c] if r[c] is not None else "-")) for r in rows))
        for c in columns
    }
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print(
            "  ".join(str(row[c] if row[c] is not None else "-").ljust(widths[c]) for c in columns)
        )


async def _keys_list(args: argparse.Namespace, store: Store) -> int:
    keys = await store.list_keys(args.app, args.limit)
    rows: list[dict[str, object]] = [
        {
            "key_id": k.key_id,
            "app_id": k.app_id,
            "environment": k.environment,
            "counter": k.counter,
            "risk_metric": k.risk_metric,
            "created_at": _time(k.created_at),
            "last_seen_at": _time(k.last_seen_at),
            "revoked_at": _time(k.revoked_at),
        }
        for k in keys
    ]
    _print_rows(
        args,
        rows,
        ["key_id", "app_id", "environment", "counter", "risk_metric", "created_at", "revoked_at"],
    )
    return 0


async def _keys_revoke(args: argparse.Namespace, store: Store) -> int:
    from appintegrity.encoding import EncodingError, b64_encode, normalize_key_id

    try:
        key_id = b64_encode(normalize_key_id(args.key_id))
    except EncodingError as exc:
        print(f"error: not a key id: {exc}", file=sys.stderr)
        return 2
    now = _now()
    if not await store.revoke_key(key_id, now):
        print(f"error: no key {key_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"key_id": key_id, "revoked_at": _time(now)}))
    else:
        print(f"revoked {key_id}")
    return 0


async def _debug_create(args: argparse.Namespace, store: Store) -> int:
    from appintegrity.service.debug_tokens import create_debug_token, debug_token_limit

    config = getattr(args, "service_config", None)
    if config is not None and config.app(args.app) is None:
        print(f"error: the app {args.app} is not in the configuration", file=sys.stderr)
        return 2
    # Over the app's limit: a ServiceError (debug_token.limit), printed by _run with exit 1.
    record, secret = await create_debug_token(
        store,
        app_id=args.app,
        name=args.name,
        now=_now(),
        limit=debug_token_limit(config, args.app),
    )
    if args.json:
        print(json.dumps({"token_id": record.token_id, "app_id": record.app_id, "secret": secret}))
    else:
        print(f"debug token {record.token_id} for {record.app_id} ({record.name})")
        print(f"secret (shown once, keep it out of builds): {secret}")
    return 0


async def _debug_list(args: argparse.Namespace, store: Store) -> int:
    tokens = await store.list_debug_tokens(args.app)
    rows: list[dict[str, object]] = [
        {
            "token_id": t.token_id,
            "app_id": t.app_id,
            "name": t.name,
            "created_at": _time(t.created_at),
            "revoked_at": _time(t.revoked_at),
        }
        for t in tokens
    ]
    _print_rows(args, rows, ["token_id", "app_id", "name", "created_at", "revoked_at"])
    return 0


async def _debug_revoke(args: argparse.Namespace, store: Store) -> int:
    now = _now()
    if not await store.revoke_debug_token(args.token_id, now):
        print(f"error: no debug token {args.token_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"token_id": args.token_id, "revoked_at": _time(now)}))
    else:
        print(f"revoked {args.token_id}")
    return 0


async def _signing_rotate(args: argparse.Namespace, store: Store) -> int:
    from appintegrity.service.app_tokens import rotate_signing_key

    record = await rotate_signing_key(store, _now())
    if args.json:
        # The row `signing-key list --json` will show for it.
        row = {"kid": record.kid, "created_at": _time(record.created_at), "retired_at": None}
        print(json.dumps(row))
        return 0
    print(
        f"new signing key {record.kid}: published by running instances within"
        " key_refresh_seconds, signing after key_publish_seconds"
    )
    return 0


async def _signing_list(args: argparse.Namespace, store: Store) -> int:
    records = await store.list_signing_keys()
    rows: list[dict[str, object]] = [
        {"kid": r.kid, "created_at": _time(r.created_at), "retired_at": _time(r.retired_at)}
        for r in records
    ]
    _print_rows(args, rows, ["kid", "created_at", "retired_at"])
    return 0
