"""Run the service under uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from appintegrity.service.app import create_app
from appintegrity.service.config import ServiceConfig, load_config

CONFIG_ENV = "APPINTEGRITY_CONFIG"
LOG_LEVEL_ENV = "APPINTEGRITY_WORKER_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(log_level: str) -> None:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format=LOG_FORMAT)


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: each process loads the config named by $APPINTEGRITY_CONFIG.

    A worker is a new process: it sets up logging itself (at the parent's level), or the
    service's INFO lines, one per verification, would be lost."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set")
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
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
    configure_logging(log_level)
    options = uvicorn_options(config, log_level=log_level)
    if workers > 1:
        if config_path is None:
            raise ValueError("several workers need the config file path")
        os.environ[CONFIG_ENV] = str(config_path)
        os.environ[LOG_LEVEL_ENV] = log_level
        uvicorn.run(
            "appintegrity.service.server:app_from_env",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )
    else:
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]


class BackgroundServer:
    """The service on a loopback port in a background thread (the demo and tests use it).

    ``port=0`` picks a free port; ``url`` is the base URL once started.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
