"""``appintegrity serve``: run the integrity service from a TOML config file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from appintegrity.cli import CONFIG_ENV, add_config_argument
from appintegrity.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the integrity service",
        description="Run the integrity service (uvicorn). Environment variables "
        "APPINTEGRITY_<SECTION>__<KEY> override the file.",
    )
    add_config_argument(parser, "TOML config file")
    parser.add_argument("--host", help="override [server] host")
    parser.add_argument("--port", type=int, help="override [server] port")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--init-sample",
        action="store_true",
        help="if the config file does not exist, write the built-in sample there first",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appintegrity.service.config import load_config
    from appintegrity.service.sample import SAMPLE_CONFIG

    if not args.config:
        print(f"error: give --config FILE or set ${CONFIG_ENV}", file=sys.stderr)
        return 2
    path = Path(args.config)
    if args.init_sample and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SAMPLE_CONFIG, encoding="utf-8")
        print(f"wrote the sample configuration to {path}", file=sys.stderr)
    env = dict(os.environ)
    if args.host:
        env["APPINTEGRITY_SERVER__HOST"] = args.host
    if args.port is not None:
        env["APPINTEGRITY_SERVER__PORT"] = str(args.port)
    from appintegrity.service.server import configure_logging

    configure_logging(args.log_level)  # before the check below logs its warnings
    try:
        config = load_config(path, env=env)
        # Build once here so configuration mistakes (bad keys, policies) exit 2, not at startup.
        from appintegrity.service.apps import Apps

        Apps(config)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    from appintegrity.service.server import run as run_server

    if args.host or args.port is not None:
        # Worker processes read the environment, so the overrides must reach them too.
        os.environ.update({k: v for k, v in env.items() if k.startswith("APPINTEGRITY_SERVER__")})
    run_server(config, config_path=path, workers=args.workers, log_level=args.log_level)
    return 0
