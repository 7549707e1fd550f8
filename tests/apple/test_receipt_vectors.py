"""Every shared ``apple-receipt`` vector verifies exactly as its ``expect`` says."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from appintegrity.cli.vectors import apple_receipt
from appintegrity.errors import VerificationError

TIME_FIELDS = ("creation_time", "expiration_time", "not_before")
VECTORS = sorted((Path(__file__).resolve().parents[3] / "shared/vectors/appattest").glob("*.json"))
RECEIPT_VECTORS = [
    path for path in VECTORS if json.loads(path.read_text())["kind"] == "apple-receipt"
]


def test_there_are_receipt_vectors() -> None:
    assert len(RECEIPT_VECTORS) >= 30


def _check_conclusion(expect: dict[str, object], conclusion: dict[str, object]) -> None:
    for name, expected in expect.items():
        assert name in conclusion, f"conclusion lacks {name}"
        if name in TIME_FIELDS:
            assert isinstance(expected, str)
            found = conclusion[name]
            assert isinstance(found, str)
            assert datetime.fromisoformat(found) == datetime.fromisoformat(expected), name
        else:
            assert conclusion[name] == expected, name
    # Fields the receipt lacks are absent, not invented.
    for name in ("not_before", "risk_metric"):
        if name not in expect:
            assert name not in conclusion


@pytest.mark.parametrize("path", RECEIPT_VECTORS, ids=lambda path: path.stem)
def test_receipt_vector_through_the_runner(path: Path) -> None:
    vector = json.loads(path.read_text())
    verify_at = datetime.fromisoformat(vector["verify_at"])
    expect = vector["expect"]
    if expect["valid"]:
        _check_conclusion(expect, apple_receipt.run(vector["input"], verify_at))
    else:
        with pytest.raises(VerificationError) as caught:
            apple_receipt.run(vector["input"], verify_at)
        assert caught.value.reason == expect["reason"]


def _cli() -> list[str] | None:
    try:
        import appintegrity.cli.verify  # noqa: F401
    except ModuleNotFoundError:
        return None
    return [sys.executable, "-m", "appintegrity", "verify"]


@pytest.mark.skipif(_cli() is None, reason="the verify subcommand (cli/verify.py) is not there yet")
def test_receipt_vectors_through_the_cli() -> None:
    command = _cli()
    assert command is not None
    for path in RECEIPT_VECTORS:
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
        expect = json.loads(path.read_text())["expect"]
        assert result.returncode == (0 if expect["valid"] else 1), (path.name, result.stderr)
        conclusion = json.loads(result.stdout)
        _check_conclusion(expect, conclusion)
