"""Every shared ``apple-receipt`` vector verifies exactly as its ``expect`` says."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.receipt import ReceiptType
from appintegrity.cli.vectors import VectorFormatError, apple_receipt
from appintegrity.errors import VerificationError
from appintegrity.testing.receipts import ReceiptAuthority

from .conftest import attested_certificate_der

TIME_FIELDS = ("creation_time", "expiration_time", "not_before")
VECTORS = sorted((Path(os.environ["APPINTEGRITY_SHARED_VECTORS"]) / "appattest").glob("*.json"))
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
    result = subprocess.run(
        [*command, *map(str, RECEIPT_VECTORS)], capture_output=True, text=True, check=False
    )
    conclusions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(conclusions) == len(RECEIPT_VECTORS), result.stderr
    expected_status = 0
    for path, conclusion in zip(RECEIPT_VECTORS, conclusions, strict=True):
        assert conclusion.pop("file") == str(path)
        expect = json.loads(path.read_text())["expect"]
        expected_status = max(expected_status, 0 if expect["valid"] else 1)
        _check_conclusion(expect, conclusion)
    assert result.returncode == expected_status, result.stderr


# --- the runner with test-kit receipts (trust_roots_pem) ------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
APP_ID = "ABCDE12345.com.example.app"


@pytest.fixture(scope="module")
def kit_vector() -> dict[str, object]:
    authority = ReceiptAuthority()
    key = ec.generate_private_key(ec.SECP256R1())
    receipt = authority.issue(
        app_id=APP_ID,
        attested_certificate_der=attested_certificate_der(key, NOW),
        client_hash=b"\x01" * 32,
        token="opaque",
        type=ReceiptType.RECEIPT,
        risk_metric=3,
        creation_time=NOW,
        not_before=NOW + timedelta(days=1),
    )
    return {
        "receipt": base64.b64encode(receipt).decode(),
        "app_id": APP_ID,
        "public_key": key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        "trust_roots_pem": [authority.root_pem],
    }


def test_kit_receipt_runs_with_its_test_root(kit_vector: dict[str, object]) -> None:
    conclusion = apple_receipt.run(kit_vector, NOW)
    assert conclusion["valid"] is True
    assert conclusion["type"] == "RECEIPT"
    assert conclusion["risk_metric"] == 3
    assert conclusion["token"] == "opaque"
    assert conclusion["client_hash"] == base64.b64encode(b"\x01" * 32).decode()
    assert conclusion["creation_time"] == "2025-06-01T12:00:00.000Z"
    assert conclusion["not_before"] == "2025-06-02T12:00:00.000Z"


@pytest.mark.parametrize(
    "change",
    [
        {"app_id": "ABCDE12345.com.example.other"},
        {"trust_roots_pem": None},
        {"receipt": "AAAA"},
    ],
    ids=["app-id", "apple-root", "garbage"],
)
def test_kit_receipt_refusals_through_the_runner(
    kit_vector: dict[str, object], change: dict[str, object]
) -> None:
    with pytest.raises(VerificationError) as caught:
        apple_receipt.run({**kit_vector, **change}, NOW)
    assert caught.value.reason == "apple.receipt_invalid"


@pytest.mark.parametrize(
    "change",
    [
        {"receipt": None},
        {"receipt": 42},
        {"public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"},
        {"trust_roots_pem": ["not a certificate"]},
        {"trust_roots_pem": "not a list"},
    ],
    ids=["missing", "not-text", "bad-key", "bad-root", "roots-not-list"],
)
def test_unusable_vector_is_a_format_error(
    kit_vector: dict[str, object], change: dict[str, object]
) -> None:
    with pytest.raises(VectorFormatError):
        apple_receipt.run({**kit_vector, **change}, NOW)
