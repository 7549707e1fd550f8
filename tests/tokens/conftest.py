"""Fixtures for the token tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appintegrity.testing.jwks import JwksServer


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()
