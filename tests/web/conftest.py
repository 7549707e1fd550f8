"""Fixtures for the adapter and inline-mode tests: a fresh World or Rig per test, closed after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inline_support import Rig
from web_support import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()
