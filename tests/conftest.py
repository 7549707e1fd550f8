"""Fixtures shared by every test module: the shared vectors, and the optional real services."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT_VECTORS = REPO / "tests" / "vectors" / "shared"


def _find_shared_vectors() -> Path:
    """The shared vectors: an explicit path, else ../shared/vectors beside the checkout, else the
    snapshot in tests/vectors/shared (so a clean clone on its own still runs every vector)."""
    explicit = os.environ.get("APPINTEGRITY_SHARED_VECTORS")
    if explicit:
        return Path(explicit)
    sibling = REPO.parent / "shared" / "vectors"
    return sibling if sibling.is_dir() else SNAPSHOT_VECTORS


SHARED_VECTORS = _find_shared_vectors()
# Test modules that list vectors at import time read this (conftest is imported before them).
os.environ["APPINTEGRITY_SHARED_VECTORS"] = str(SHARED_VECTORS)
REQUIRE_SERVICES = os.environ.get("APPINTEGRITY_REQUIRE_SERVICES") == "1"

POSTGRES_URL = os.environ.get(
    "APPINTEGRITY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("APPINTEGRITY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a clear reason when a service is down, unless CI says it must be there."""
    if _port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and APPINTEGRITY_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message} (start it, or see .ci/run)")


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    if not SHARED_VECTORS.is_dir():
        pytest.fail(f"shared vectors not found at {SHARED_VECTORS}")
    return SHARED_VECTORS
