"""`appintegrity inspect`: explains attestations, assertions and receipts; never a traceback."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appintegrity.cli import main
from appintegrity.testing.ios import AppAttestCA, Defect, SoftwareIPhone

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
IOS27 = "apple-docs-2026-sample-ios27-prod-attestation.json"


def _inspect_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["inspect", *args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document, dict)
    return document


def test_attestation_vector_file_is_explained(
    vectors_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = _inspect_json(capsys, str(vectors_dir / "appattest" / IOS27))
    assert document["kind"] == "apple-attestation"
    assert document["format"] == "apple-appattest"
    certificates = document["certificates"]
    assert isinstance(certificates, list) and len(certificates) == 2
    assert "Apple App Attestation CA 1" in certificates[0]["issuer"]
    assert certificates[0]["not_after"] == "2026-04-23T18:13:12+00:00"
    auth = document["authenticator_data"]
    assert isinstance(auth, dict)
    assert auth["flags"] == {"value": "0x40", "set": ["AT (attested credential data)"]}
    assert auth["counter"] == 0
    assert auth["aaguid"]["environment"] == "production"
    assert auth["key_id"] == "zgSY9YSD+7TaDXssY6WlOPVS1K3Lmk+pFhlcSWE+ZV0="
    assert auth["credential_id_is_key_id"] is True
    assert auth["extensions"] == {
        "apple_bundle_version_01": "1",
        "apple_validation_category_01": "AQAAAA==",
    }
    receipt = document["receipt"]
    assert isinstance(receipt, dict) and receipt["size"] == 3977


def test_development_attestation_blob_in_text_mode(
    vectors_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = json.loads(
        (vectors_dir / "appattest" / "bas-d-chiff-dev-attestation.json").read_text()
    )
    blob = vector["input"]["attestation"]
    assert main(["inspect", blob]) == 0
    out = capsys.readouterr().out
    assert "environment: development" in out
    assert "kind: apple-attestation" in out
    assert "subject:" in out


def test_raw_assertion_file_is_explained(
    tmp_path: Path, vectors_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = json.loads((vectors_dir / "appattest" / "bas-d-chiff-dev-assertion.json").read_text())
    path = tmp_path / "assertion.cbor"
    path.write_bytes(base64.b64decode(vector["input"]["assertion"]))
    document = _inspect_json(capsys, str(path))
    assert document["kind"] == "apple-assertion"
    auth = document["authenticator_data"]
    assert isinstance(auth, dict) and auth["counter"] == 3


def test_test_kit_objects_from_stdin() -> None:
    ca = AppAttestCA.generate(now=NOW)
    phone = SoftwareIPhone("ABCDE12345.com.example.inspect", ca=ca, environment="development")
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "c", now=NOW, defect=Defect.IOS27_EXTENSIONS)
    result = subprocess.run(
        [sys.executable, "-m", "appintegrity", "inspect", "-", "--json"],
        input=base64.urlsafe_b64encode(attestation).rstrip(b"="),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["authenticator_data"]["key_id"] == key_id
    assert document["authenticator_data"]["aaguid"]["environment"] == "development"
    assert document["authenticator_data"]["extensions"]["apple_bundle_version_01"] == "1"
    # A test CA is not Apple's: the chain is reported untrusted, without failing the command.
    assert document["chain"]["trusted"] is False


@pytest.mark.parametrize(
    "blob",
    [
        "garbage",
        "!!!not base64!!!",
        base64.b64encode(b"\xa1\x01\x02").decode(),  # CBOR, but neither object
        base64.b64encode(b"\xa3\x63fmt\x64none\x67attStmt\xa0\x68authData\x40").decode(),
        base64.b64encode(b"\xa2\x69signature\x40\x71authenticatorData\x41\x00").decode(),
    ],
)
def test_malformed_input_exits_1_with_a_message(blob: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appintegrity", "inspect", blob],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_play_integrity_token_is_handed_over(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["inspect", "aaaa.bbbb.cccc.dddd.eeee"])
    captured = capsys.readouterr()
    # Routed to the Play Integrity explainer (installed or not), never parsed as App Attest.
    assert status in (1, 2)
    assert "App Attest" not in captured.err
    if status == 2:
        assert "Play Integrity support not installed yet" in captured.err


def test_a_vector_file_is_judged_at_its_verify_at_and_at_overrides_it(
    vectors_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(vectors_dir / "appattest" / "uebelack-production-attestation.json")
    at_vector_time = _inspect_json(capsys, path)["chain"]
    assert isinstance(at_vector_time, dict)
    assert at_vector_time["trusted"] is True
    assert at_vector_time["at"] == "2024-02-08T12:00:00+00:00"
    before_the_leaf = _inspect_json(capsys, path, "--at", "2021-01-01T00:00:00Z")["chain"]
    assert isinstance(before_the_leaf, dict)
    assert before_the_leaf["trusted"] is False
    assert before_the_leaf["reason"] == "apple.certificate_chain_invalid"


def test_a_play_integrity_vector_is_decrypted_with_its_own_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    vector = Path(__file__).parent / "google" / "vectors" / "valid-standard.json"
    document = _inspect_json(capsys, str(vector))
    assert document["kind"] == "play-integrity"
    payload = document["payload"]
    assert isinstance(payload, dict)
    assert payload["appIntegrity"]["appRecognitionVerdict"] == "PLAY_RECOGNIZED"


def test_a_bad_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["inspect", "--at", "yesterday", "AAAA"])
    assert caught.value.code == 2


PLAY_VECTOR = Path(__file__).parent / "google" / "vectors" / "valid-standard.json"
PLAY_TOKEN: str = json.loads(PLAY_VECTOR.read_text())["input"]["token"]


@pytest.mark.parametrize("field", ["decryption_key", "verification_key"])
def test_a_play_vector_whose_key_is_not_text_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    vector = json.loads(PLAY_VECTOR.read_text())
    vector["input"][field] = 12345
    path = tmp_path / "play.json"
    path.write_text(json.dumps(vector))
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: the vector's input.{field} must be a base64 string\n"
    assert main(["inspect", str(path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "error": f"the vector's input.{field} must be a base64 string",
        "reason": None,
    }


def test_a_raw_der_receipt_file_is_explained(
    tmp_path: Path, vectors_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = json.loads(
        (vectors_dir / "appattest" / "veehaitch-ios-14.2-receipt-1.json").read_text()
    )
    path = tmp_path / "receipt.der"
    path.write_bytes(base64.b64decode(vector["input"]["receipt"]))
    document = _inspect_json(capsys, str(path))
    assert document["kind"] == "apple-receipt"
    fields = document["fields"]
    assert isinstance(fields, dict)
    assert fields["app_id"] == vector["input"]["app_id"]
    assert fields["token"] == vector["expect"]["token"]


def test_a_der_receipt_file_that_does_not_parse_names_the_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.der"
    path.write_bytes(b"\x30\x82\x01\x00" + b"\xff" * 8)
    assert main(["inspect", str(path), "--json"]) == 1
    failure = json.loads(capsys.readouterr().out)
    assert failure["error"].startswith("receipt: ")
    assert failure["reason"] == "apple.receipt_invalid"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["garbage"], "apple.malformed"),
        ([base64.b64encode(b"\xa1\x01\x02").decode()], None),
        (["aaaa.bbbb.cccc.dddd.eeee"], "google.malformed"),
        ([str(PLAY_VECTOR), "--verification-key", "bad!"], "config.invalid"),
        ([PLAY_TOKEN, "--decryption-key", "AAAA"], None),
    ],
    ids=["app-attest", "app-attest-no-code", "play", "play-bad-key", "play-one-key"],
)
def test_json_failures_have_one_shape_on_stdout(
    capsys: pytest.CaptureFixture[str], args: list[str], reason: str | None
) -> None:
    assert main(["inspect", *args, "--json"]) == 1
    captured = capsys.readouterr()
    failure = json.loads(captured.out)
    assert failure == {"error": failure["error"], "reason": reason}
    assert failure["error"]
    assert captured.err == ""


def test_json_nested_too_deeply_is_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"a":' * 100_000)
    assert main(["inspect", str(path)]) == 1
    assert "nested too deeply" in capsys.readouterr().err
