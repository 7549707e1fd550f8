"""Our play-integrity vectors (made by the test kit), through the runner and ``verify``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from appintegrity.cli.vectors import VectorFormatError
from appintegrity.cli.vectors.play_integrity import run
from appintegrity.errors import GoogleVerificationError

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.json"))


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def verify_at(document: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(document["verify_at"]).replace("Z", "+00:00"))


def test_there_is_a_vector_per_reason() -> None:
    reasons = {load(p)["expect"].get("reason") for p in VECTORS}  # type: ignore[attr-defined]
    assert reasons >= {
        "google.malformed", "google.decryption_failed", "google.signature_invalid",
        "google.package_mismatch", "google.request_hash_mismatch", "google.nonce_mismatch",
        "google.stale", "google.app_not_recognized", "google.certificate_mismatch",
        "google.device_integrity_insufficient", "google.unlicensed",
    }  # fmt: skip


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_through_the_runner(path: Path) -> None:
    document = load(path)
    inputs = document["input"]
    expect = document["expect"]
    assert isinstance(inputs, dict) and isinstance(expect, dict)
    if expect["valid"]:
        conclusion = run(inputs, verify_at(document))
        assert conclusion["valid"] is True
        assert conclusion["decision"] == expect["decision"]
    else:
        with pytest.raises(GoogleVerificationError) as caught:
            run(inputs, verify_at(document))
        assert caught.value.reason == expect["reason"]


def test_runner_refuses_unusable_inputs() -> None:
    document = load(VECTORS[0])
    inputs = dict(document["input"])  # type: ignore[call-overload]
    when = verify_at(document)
    with pytest.raises(VectorFormatError):
        run({**inputs, "decryption_key": "AAAA"}, when)
    with pytest.raises(VectorFormatError):
        run({**inputs, "request_hash": "a", "nonce": "b" * 16}, when)
    with pytest.raises(VectorFormatError):
        run({k: v for k, v in inputs.items() if k != "token"}, when)


_HAS_VERIFY = importlib.util.find_spec("appintegrity.cli.verify") is not None


@pytest.mark.skipif(not _HAS_VERIFY, reason="appintegrity.cli.verify is not there yet")
@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_through_the_verify_command(path: Path) -> None:
    expect = load(path)["expect"]
    assert isinstance(expect, dict)
    process = subprocess.run(
        [sys.executable, "-m", "appintegrity", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    conclusion = json.loads(process.stdout)
    assert conclusion["valid"] is expect["valid"], process.stderr
    if expect["valid"]:
        assert process.returncode == 0
        assert conclusion["decision"] == expect["decision"]
    else:
        assert process.returncode == 1
        assert conclusion["reason"] == expect["reason"]
