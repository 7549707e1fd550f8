"""`appintegrity demo` runs the whole flow and shows the refusals."""

from __future__ import annotations

import subprocess
import sys


def test_demo_exits_0_and_prints_every_step_and_refusal() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appintegrity", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in (
        "POST /v1/challenges",
        "POST /v1/registrations",
        "→ 201",
        "POST /v1/assertions",
        "request served",
        "REFUSED as expected: challenge.consumed",
        "REFUSED as expected: apple.signature_invalid",
        "REFUSED as expected: google.request_hash_mismatch",
    ):
        assert expected in out, expected
    # The software iPhone's attestation carries a receipt from the demo's receipt authority.
    assert '"receipt": {\n        "valid": true' in out
    assert "Traceback" not in result.stderr
