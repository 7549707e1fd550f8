"""Run the service under uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from appintegrity.service.app import create_app
from appintegrity.service.config import ServiceConfig, load_config

CONFIG_ENV = "APPINTEGRITY_CONFIG"


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: each process loads the config named by $APPINTEGRITY_CONFIG."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set")
    return create_app(load_config(path))


def uvicorn_options(config: ServiceConfig, *, log_level: str = "info") -> dict[str, object]:
    return {
        "host": config.server.host,
        "port": config.server.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(config.server.forwarded_allow_ips),
        "access_log": False,
        "log_level": log_level,
        "server_header": False,
        "timeout_graceful_shutdown": 5,
    }


def run(
    config: ServiceConfig,
    *,
    config_path: Path | None = None,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve until interrupted. Several workers share the port; each loads the config file."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    options = uvicorn_options(config, log_level=log_level)
    if workers > 1:
        if config_path is None:
            raise ValueError("several workers need the config file path")
        os.environ[CONFIG_ENV] = str(config_path)
        uvicorn.run(
            "appintegrity.service.server:app_from_env",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )
    else:
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]
