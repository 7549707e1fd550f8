"""The committed snapshot of the shared vectors matches ../shared/vectors when both are present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT_VECTORS = REPO / "tests" / "vectors" / "shared"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_snapshot_matches_the_shared_vectors() -> None:
    shared = REPO.parent / "shared" / "vectors"
    if not shared.is_dir():
        pytest.skip("../shared/vectors is not beside this checkout; the snapshot stands in for it")
    assert _files(SNAPSHOT_VECTORS) == _files(shared)
