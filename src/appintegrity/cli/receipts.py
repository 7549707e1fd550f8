"""``appintegrity receipts refresh``: trade stored App Attest receipts for newer ones.

For a cron job, or instead of the service's background refresher: the stored receipts of the
selected apps that are due (last refreshed more than the app's ``interval_hours`` ago, or
``--older-than HOURS``; ``--all`` for every one), oldest first, or one key, are posted to Apple's
data server with the app's ``[apps.receipt_refresh]`` DeviceCheck key; a new receipt is
validated (Apple's steps, with the app's receipt trust roots) and stored with its fraud-risk
metric. 304 and 404 keep the stored receipt, which then counts as checked: it is not due again
for an interval. Exit status: 0 when nothing failed, 1 when a refresh failed or Apple's answer
did not validate, 2 for configuration or usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from appintegrity.cli import CONFIG_ENV, MAX_LIMIT, add_config_argument, int_in_range
from appintegrity.errors import AppIntegrityError, ConfigError

if TYPE_CHECKING:  # the service modules load only when a command runs
    from appintegrity.service.apps import Apps, IosApp
    from appintegrity.service.config import ServiceConfig
    from appintegrity.service.receipts import RefreshOutcome
    from appintegrity.store.base import Store


MAX_OLDER_THAN_HOURS = 100 * 365 * 24
"""Older than a century is "all of them"; anything larger overflows the date arithmetic."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    receipts = subparsers.add_parser("receipts", help="App Attest receipts and fraud-risk metrics")
    sub = receipts.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "refresh",
        help="refresh stored receipts with Apple and store their risk metrics",
        description="Refresh stored App Attest receipts with Apple's data server, using each "
        "app's [apps.receipt_refresh] settings.",
    )
    add_config_argument(p, "service config file")
    p.add_argument("--app", help="only this iOS app id")
    p.add_argument("--key", help="only this key id (base64, base64url or hex)")
    due = p.add_mutually_exclusive_group()
    due.add_argument(
        "--older-than",
        type=float,
        metavar="HOURS",
        help="receipts last refreshed more than HOURS ago (default: the app's interval_hours)",
    )
    due.add_argument("--all", action="store_true", help="every stored receipt, however fresh")
    p.add_argument(
        "--limit",
        type=int_in_range(1, MAX_LIMIT),
        default=100_000,
        help=f"at most this many keys per app (1 to {MAX_LIMIT}, default 100000)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_refresh)


def _fail(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def run_refresh(args: argparse.Namespace) -> int:
    from appintegrity.service.apps import Apps
    from appintegrity.service.config import load_config

    if not args.config:
        return _fail(f"give --config FILE or set ${CONFIG_ENV}")
    if args.older_than is not None:
        if not math.isfinite(args.older_than):
            return _fail("--older-than must be a finite number of hours")
        if args.older_than < 0:
            return _fail("--older-than must not be negative")
        if args.older_than > MAX_OLDER_THAN_HOURS:
            return _fail(f"--older-than must be at most {MAX_OLDER_THAN_HOURS} hours (100 years)")
    try:
        config = load_config(args.config)
        apps = Apps(config)
    except ConfigError as exc:
        return _fail(exc.message)
    selected = [app for app in apps.ios_apps.values() if app.refresh_client is not None]
    if args.app is not None:
        if args.app not in apps.ios_apps:
            return _fail(f"{args.app} is not a configured iOS app")
        selected = [app for app in selected if app.config.id == args.app]
        if not selected:
            return _fail(f"apps[{args.app}] has no [apps.receipt_refresh] table")
    if not selected:
        return _fail("no iOS app has an [apps.receipt_refresh] table")
    key_id = None
    if args.key is not None:
        from appintegrity.encoding import EncodingError, b64_encode, normalize_key_id

        try:
            key_id = b64_encode(normalize_key_id(args.key))
        except EncodingError as exc:
            return _fail(f"--key is not a key id: {exc}")
    try:
        return asyncio.run(_refresh(args, config, apps, selected, key_id))
    except AppIntegrityError as exc:
        return _fail(f"{exc.code}: {exc.message}", 1)


async def _refresh(
    args: argparse.Namespace,
    config: ServiceConfig,
    apps: Apps,
    chosen: list[IosApp],
    key_id: str | None,
) -> int:
    from appintegrity.service.receipts import refresh_key_receipt
    from appintegrity.store import open_store

    store = open_store(config.server.store, config.server.cache)
    outcomes: list[RefreshOutcome] = []
    try:
        await store.migrate()
        by_id = {app.config.id: app for app in chosen}
        if key_id is not None:
            key = await store.get_key(key_id)
            if key is None:
                return _fail(f"no key {key_id}", 1)
            app = by_id.get(key.app_id)
            if app is None:
                return _fail(f"key {key_id} belongs to {key.app_id}, which is not selected", 2)
            outcomes.append(await refresh_key_receipt(app, key, store, datetime.now(UTC)))
        else:
            for app in chosen:
                if not await _refresh_due(args, app, store, outcomes):
                    break
    finally:
        await apps.aclose()
        await store.close()
    _report(args, outcomes)
    return 1 if any(o.status in ("failed", "invalid") for o in outcomes) else 0


async def _refresh_due(
    args: argparse.Namespace, app: IosApp, store: Store, outcomes: list[RefreshOutcome]
) -> bool:
    """Refresh ``app``'s due receipts into ``outcomes``; False when Apple ended the run."""
    from appintegrity.service.receipts import ENDS_BATCH, refresh_key_receipt

    now = datetime.now(UTC)
    due = await store.keys_due_for_receipt_refresh(app.config.id, now - _age(args, app), args.limit)
    for index, key in enumerate(due):
        outcome = await refresh_key_receipt(app, key, store, datetime.now(UTC))
        outcomes.append(outcome)
        if outcome.reason in ENDS_BATCH:
            # Apple is down, rate-limiting, or refusing our key: every other request would
            # fail the same way (as the background refresher knows); stop and let the next
            # run take the rest.
            print(
                f"stopped: {outcome.reason}; {len(due) - index - 1} more due receipt(s) of "
                f"{app.config.id} and any other app were not attempted",
                file=sys.stderr,
            )
            return False
    return True


def _age(args: argparse.Namespace, app: IosApp) -> timedelta:
    """How long ago a receipt must have been refreshed to be due."""
    if args.all:
        return timedelta(0)  # everything stored before now
    if args.older_than is not None:
        return timedelta(hours=args.older_than)
    refresh = app.config.receipt_refresh
    assert refresh is not None  # only apps with [apps.receipt_refresh] are chosen
    return timedelta(hours=refresh.interval_hours)


def _report(args: argparse.Namespace, outcomes: list[RefreshOutcome]) -> None:
    rows = [
        {
            "key_id": o.key_id,
            "app_id": o.app_id,
            "status": o.status,
            "risk_metric": o.risk_metric,
            "reason": o.reason,
            "message": o.message,
        }
        for o in outcomes
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        detail = " ".join(str(row[k]) for k in ("reason", "message") if row[k])
        metric = row["risk_metric"] if row["risk_metric"] is not None else "-"
        print(f"{row['key_id']}  {row['app_id']}  {row['status']}  risk_metric={metric}  {detail}")
    counts = Counter(str(row["status"]) for row in rows)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    print(f"{len(rows)} receipt(s): {summary}")
