"""Several ``appintegrity serve`` processes sharing one PostgreSQL schema and one Redis prefix.

Each instance is a real subprocess on its own loopback port, started from a TOML file the way
a deployment starts it, so nothing is shared between instances except the stores. A proxy
thread (the store tests' ``TcpProxy`` on an event loop of its own) can sit between the
instances and a backend, to take that backend away and bring it back.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

from appintegrity.encoding import b64_encode
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
from store.proxy import TcpProxy  # tests/store/proxy.py: the asyncio forwarder

IOS_APP = "SCALE12345.com.example.scale"
ISSUER = "https://integrity.scale.test"
ADMIN_KEY = "scale-admin-key-0123456789"
KEY_REFRESH_SECONDS = 0.3
# A rotated key is published this long before any instance signs with it: generous beside the
# refresh interval, so every instance has loaded it even on a loaded machine.
KEY_PUBLISH_SECONDS = 2.0
STARTUP_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


def through_port(url: str, port: int) -> str:
    """``url`` with its port replaced (to go through a proxy on 127.0.0.1:``port``)."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = hostport.rsplit(":", 1)[0] if ":" in hostport else hostport
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


# -- isolated datasets ---------------------------------------------------------------------------


@dataclass
class SharedStores:
    """A fresh PostgreSQL schema and a fresh Redis key prefix; ``drop()`` removes both."""

    postgres_url: str
    redis_url: str
    schema: str = field(default_factory=lambda: f"scale_{uuid.uuid4().hex[:12]}")
    prefix: str = field(default_factory=lambda: f"scale{uuid.uuid4().hex[:12]}:")

    @property
    def store_url(self) -> str:
        return with_param(self.postgres_url, "schema", self.schema)

    @property
    def cache_url(self) -> str:
        return with_param(self.redis_url, "prefix", self.prefix)

    def drop(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def redis_keys(self) -> list[bytes]:
        client = redis.Redis.from_url(self.redis_url)
        try:
            return list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        finally:
            client.close()


# -- a TCP proxy on a thread of its own ------------------------------------------------------------


class ProxyThread:
    """``TcpProxy`` driven from synchronous tests: ``stop()`` is the backend dying (connections
    reset, new ones refused), ``start()`` is it coming back on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(target_host, target_port)
        self.port = self.proxy.port

    def _call(self, coroutine: Any) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.result(timeout=15)

    def start(self) -> None:
        self._call(self.proxy.start())

    def stop(self) -> None:
        self._call(self.proxy.stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


# -- the service instances -----------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(
    directory: Path,
    *,
    store_url: str,
    cache_url: str,
    ca: AppAttestCA,
    limits: Mapping[str, int],
) -> Path:
    """The TOML file every instance reads (only ``--port`` differs between them)."""
    (directory / "test-root.pem").write_bytes(ca.root_pem)
    sections: dict[str, Mapping[str, object]] = {
        "server": {
            "host": "127.0.0.1",
            "store": store_url,
            "cache": cache_url,
            "issuer": ISSUER,
            "admin_key": ADMIN_KEY,
        },
        "tokens": {
            "ttl_seconds": 600,
            "key_refresh_seconds": KEY_REFRESH_SECONDS,
            "key_publish_seconds": KEY_PUBLISH_SECONDS,
        },
        "limits": {
            "challenges_per_minute_per_ip": 0,
            "verifications_per_minute_per_ip": 0,
            "verifications_per_minute_per_key": 0,
            **limits,
        },
    }
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    lines += [
        "[[apps]]",
        f"id = {_toml_value(IOS_APP)}",
        'platform = "ios"',
        'environment = "production"',
        'trust_roots = ["test-root.pem"]',
    ]
    path = directory / "service.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Instance:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client

    def log_tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return ""


class Cluster:
    """``count`` service instances on one config; ``instances[i]`` is the i-th."""

    def __init__(self, directory: Path, config: Path, ca: AppAttestCA, count: int) -> None:
        self.directory = directory
        self.config = config
        self.ca = ca
        self.count = count
        self.instances: list[Instance] = []

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def start(self) -> Cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPINTEGRITY_")}
        try:
            for index in range(self.count):
                port = free_port()
                log = self.directory / f"instance-{index}.log"
                with log.open("wb") as out:
                    process = subprocess.Popen(
                        [
                            sys.executable, "-m", "appintegrity", "serve",
                            "--config", str(self.config), "--port", str(port),
                            "--log-level", "warning",
                        ],
                        stdout=out, stderr=subprocess.STDOUT, env=env,
                    )  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                client = httpx.Client(base_url=url, timeout=30)
                self.instances.append(Instance(url, process, log, client))
            deadline = time.monotonic() + STARTUP_SECONDS
            for instance in self.instances:
                self._wait_healthy(instance, deadline)
            self._wait_same_signing_keys(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _wait_healthy(instance: Instance, deadline: float) -> None:
        while True:
            if instance.process.poll() is not None:
                raise RuntimeError(
                    f"instance {instance.url} exited with {instance.process.returncode}:\n"
                    + instance.log_tail()
                )
            try:
                if instance.client.get("/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"instance {instance.url} not healthy:\n{instance.log_tail()}")
            time.sleep(0.1)

    def _wait_same_signing_keys(self, deadline: float) -> None:
        """Instances started together on an empty store may each create a first signing key;
        within ``key_refresh_seconds`` they all load all of them. Tests start after that."""
        while True:
            kid_sets = []
            for instance in self.instances:
                keys = instance.client.get("/.well-known/jwks.json").json()["keys"]
                kid_sets.append(frozenset(key["kid"] for key in keys))
            if len(set(kid_sets)) == 1:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the instances never agreed on signing keys: {kid_sets}")
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for instance in self.instances:
            self._wait_healthy(instance, deadline)

    def stop(self) -> None:
        for instance in self.instances:
            if instance.process.poll() is None:
                instance.process.terminate()
        for instance in self.instances:
            try:
                instance.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait(timeout=10)
            instance.client.close()
        self.instances = []

    # -- the protocol, from a software iPhone --------------------------------------------------

    def post(self, index: int, path: str, body: object = None, **kwargs: Any) -> httpx.Response:
        client = self.instances[index % self.count].client
        if body is None:
            return client.post(path, **kwargs)
        return client.post(path, json=body, **kwargs)

    def challenge(
        self, index: int, purpose: str = "assertion", *, client_address: str | None = None
    ) -> str:
        """A challenge from instance ``index``; ``client_address`` is sent as X-Forwarded-For
        (the instances trust it from 127.0.0.1) so a polling loop stays out of the per-address
        rate limit the tests configure."""
        headers = {"X-Forwarded-For": client_address} if client_address else None
        response = self.post(index, "/v1/challenges", {"purpose": purpose}, headers=headers)
        assert response.status_code == 201, response.text
        value: str = response.json()["challenge"]
        return value

    def iphone(self) -> SoftwareIPhone:
        return SoftwareIPhone(IOS_APP, ca=self.ca)

    def registration_body(
        self, phone: SoftwareIPhone, challenge: str, key_id: str | None = None
    ) -> dict[str, str]:
        key_id = key_id or phone.generate_key()
        return {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": key_id,
            "challenge": challenge,
            "token": b64_encode(phone.attest_key(key_id, challenge)),
        }

    def register(self, index: int, phone: SoftwareIPhone) -> str:
        body = self.registration_body(phone, self.challenge(index, "attestation"))
        response = self.post(index, "/v1/registrations", body)
        assert response.status_code == 201, response.text
        return body["keyId"]

    @staticmethod
    def assertion_body(
        phone: SoftwareIPhone, key_id: str, challenge: str, **extra: object
    ) -> dict[str, object]:
        payload = json.dumps({"action": "redeem", "challenge": challenge})
        return {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": key_id,
            "payload": payload,
            "token": b64_encode(phone.generate_assertion(key_id, payload)),
            **extra,
        }

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


def error_code(response: httpx.Response) -> str:
    """The stable code of a JSON error body ``{"error": {"code", "message"}}``."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    code: str = body["error"]["code"]
    return code


async def post_together(
    targets: Iterable[tuple[str, str, object]], headers: Mapping[str, str] | None = None
) -> list[httpx.Response]:
    """POST every (base URL, path, body) at once: each task first opens a connection (a
    ``/healthz`` call), then all are released by one event, so they reach the instances
    together instead of one after another."""
    jobs = list(targets)
    limits = httpx.Limits(max_connections=len(jobs), max_keepalive_connections=len(jobs))
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:
        go = asyncio.Event()
        connected = 0

        async def one(url: str, path: str, body: object) -> httpx.Response:
            nonlocal connected
            await client.get(url + "/healthz")
            connected += 1
            if connected == len(jobs):
                go.set()
            await go.wait()
            return await client.post(url + path, json=body)

        return await asyncio.gather(*(one(*job) for job in jobs))
