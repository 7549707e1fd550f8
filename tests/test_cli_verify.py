"""`appintegrity verify`: the vector format, its JSON conclusions and its exit statuses."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appintegrity.cli import main
from appintegrity.cli import verify as verify_command
from appintegrity.testing.ios import AppAttestCA, Defect, SoftwareIPhone

APP_ID = "ABCDE12345.com.example.cli"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appintegrity", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _apple_vectors(vectors_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in (vectors_dir / "appattest").glob("*.json")
        if json.loads(path.read_text())["kind"] in ("apple-attestation", "apple-assertion")
    )


def test_every_apple_vector_concludes_as_it_expects_through_the_cli(vectors_dir: Path) -> None:
    paths = _apple_vectors(vectors_dir)
    result = _cli(*map(str, paths))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(paths)
    any_invalid = False
    for path, conclusion in zip(paths, lines, strict=True):
        expect = json.loads(path.read_text())["expect"]
        assert conclusion["file"] == str(path)
        assert conclusion["valid"] is expect["valid"], path.name
        if expect["valid"]:
            for key, value in expect.items():
                assert conclusion[key] == value, (path.name, key)
        else:
            any_invalid = True
            assert conclusion["reason"] == expect["reason"], path.name
            assert conclusion["message"]
    assert result.returncode == (1 if any_invalid else 0)


def test_expect_mode_passes_on_the_apple_vectors(vectors_dir: Path) -> None:
    paths = _apple_vectors(vectors_dir)
    result = _cli("--expect", *map(str, paths))
    assert result.returncode == 0, result.stdout
    assert all(json.loads(line)["matches"] for line in result.stdout.splitlines())
    assert f"{len(paths)}/{len(paths)}" in result.stderr


def test_single_valid_file_exits_0_and_reports_the_key(vectors_dir: Path) -> None:
    path = vectors_dir / "appattest" / "apple-docs-2026-sample-ios27-prod-attestation.json"
    result = _cli(str(path))
    assert result.returncode == 0
    conclusion = json.loads(result.stdout)
    assert conclusion["valid"] is True
    assert conclusion["key_id"] == "zgSY9YSD+7TaDXssY6WlOPVS1K3Lmk+pFhlcSWE+ZV0="
    assert conclusion["environment"] == "production"
    assert conclusion["receipt_present"] is True
    assert conclusion["receipt_valid"] in (True, None)  # None until receipts are installed
    assert conclusion["extensions"]["apple_validation_category_01"] == "AQAAAA=="


def test_single_invalid_file_exits_1_with_reason(vectors_dir: Path) -> None:
    path = vectors_dir / "appattest" / "bas-d-chiff-dev-assertion-replayed.json"
    result = _cli(str(path))
    assert result.returncode == 1
    assert json.loads(result.stdout)["reason"] == "apple.counter_invalid"


def _write(tmp_path: Path, name: str, document: object) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _test_kit_vector(ca: AppAttestCA, defect: Defect | None) -> dict[str, Any]:
    phone = SoftwareIPhone(APP_ID, ca=ca)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "challenge", now=NOW, defect=defect)
    return {
        "kind": "apple-attestation",
        "verify_at": NOW.isoformat().replace("+00:00", "Z"),
        "input": {
            "attestation": base64.b64encode(attestation).decode(),
            "key_id": key_id,
            "challenge": "challenge",
            "app_id": APP_ID,
            "environment": "production",
            "trust_roots_pem": [ca.root_pem.decode()],
        },
        "expect": {"valid": True},
    }


@pytest.fixture(scope="module")
def ca() -> AppAttestCA:
    return AppAttestCA.generate(now=NOW)


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        (None, None),
        (Defect.WRONG_NONCE, "apple.nonce_mismatch"),
        (Defect.EXPIRED_LEAF, "apple.certificate_chain_invalid"),
        (Defect.WRONG_ENVIRONMENT, "apple.environment_mismatch"),
        (Defect.TRUNCATED_AUTH_DATA, "apple.malformed"),
    ],
)
def test_test_kit_vectors_with_trust_roots(
    tmp_path: Path,
    ca: AppAttestCA,
    capsys: pytest.CaptureFixture[str],
    defect: Defect | None,
    reason: str | None,
) -> None:
    path = _write(tmp_path, "v.json", _test_kit_vector(ca, defect))
    status = main(["verify", str(path)])
    conclusion = json.loads(capsys.readouterr().out)
    if reason is None:
        assert status == 0
        assert conclusion["valid"] is True
        assert conclusion["receipt_present"] is False
        assert conclusion["receipt_valid"] is None
    else:
        assert status == 1
        assert conclusion == {"valid": False, "reason": reason, "message": conclusion["message"]}


def test_challenge_b64_and_client_data_hash_b64(
    tmp_path: Path, ca: AppAttestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = SoftwareIPhone(APP_ID, ca=ca)
    for field in ("challenge_b64", "client_data_hash_b64"):
        key_id = phone.generate_key()
        raw = bytes(range(32))
        attestation = (
            phone.attest_key(key_id, raw, now=NOW)
            if field == "challenge_b64"
            else phone.attest_key(key_id, client_data_hash=raw, now=NOW)
        )
        vector = _test_kit_vector(ca, None)
        del vector["input"]["challenge"]
        vector["input"].update(
            {
                "attestation": base64.b64encode(attestation).decode(),
                "key_id": key_id,
                field: base64.b64encode(raw).decode(),
            }
        )
        assert main(["verify", str(_write(tmp_path, f"{field}.json", vector))]) == 0
        assert json.loads(capsys.readouterr().out)["key_id"] == key_id


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "JSON object"),
        ('{"kind": "apple-attestation", "input": {}}', "verify_at"),
        ('{"kind": "mystery", "verify_at": "2026-01-01T00:00:00Z", "input": {}}', "unknown kind"),
        (
            '{"kind": "apple-attestation", "verify_at": "2026-01-01T00:00:00Z", "input": {}}',
            "input.attestation",
        ),
        (
            '{"kind": "apple-assertion", "verify_at": "yesterday", "input": {}}',
            "ISO 8601",
        ),
    ],
)
def test_unusable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    path = _write(tmp_path, "bad.json", content)
    assert main(["verify", str(path)]) == 2
    conclusion = json.loads(capsys.readouterr().out)
    assert conclusion["valid"] is None
    assert needle in conclusion["message"]


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in json.loads(capsys.readouterr().out)["message"]


def test_kind_without_its_module_is_not_supported_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kind the format will name before its runner lands (as play-integrity once was).
    monkeypatch.setattr(verify_command, "KINDS", (*verify_command.KINDS, "future-kind"))
    path = _write(
        tmp_path,
        "f.json",
        {"kind": "future-kind", "verify_at": "2026-01-01T00:00:00Z", "input": {}},
    )
    assert main(["verify", str(path)]) == 2
    assert "not supported yet" in json.loads(capsys.readouterr().out)["message"]


def test_worst_status_wins_with_one_line_per_file(
    tmp_path: Path, ca: AppAttestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "good.json", _test_kit_vector(ca, None))
    bad = _write(tmp_path, "bad.json", _test_kit_vector(ca, Defect.WRONG_KEY_ID))
    broken = _write(tmp_path, "broken.json", "{")
    assert main(["verify", str(good), str(good)]) == 0
    assert main(["verify", str(good), str(bad)]) == 1
    assert main(["verify", str(bad), str(broken), str(good)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["valid"] for line in lines] == [
        True,
        True,
        True,
        False,
        False,
        None,
        True,
    ]


def test_expect_mode_reports_mismatches(
    tmp_path: Path, ca: AppAttestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = _test_kit_vector(ca, Defect.WRONG_NONCE)
    vector["expect"] = {"valid": False, "reason": "apple.nonce_mismatch"}
    right = _write(tmp_path, "right.json", vector)
    vector["expect"] = {"valid": False, "reason": "apple.key_id_mismatch"}
    wrong = _write(tmp_path, "wrong.json", vector)
    assert main(["verify", "--expect", str(right)]) == 0
    assert json.loads(capsys.readouterr().out)["matches"] is True
    assert main(["verify", "--expect", str(right), str(wrong)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["matches"] for line in lines] == [True, False]
    assert "reason" in lines[1]["mismatches"][0]


def test_a_reader_that_stops_early_gets_no_traceback(vectors_dir: Path) -> None:
    paths = [str(path) for path in _apple_vectors(vectors_dir)] * 20
    process = subprocess.Popen(
        [sys.executable, "-m", "appintegrity", "verify", *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr, stderr


# -- unusable inputs are exit 2, never a traceback; one bad file never stops the others -------

SECP112R1_KEY = (  # a valid SubjectPublicKeyInfo on a curve cryptography cannot load
    "-----BEGIN PUBLIC KEY-----\n"
    "MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAEAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==\n"
    "-----END PUBLIC KEY-----\n"
)
ED25519_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)


def _shared_vector(vectors_dir: Path, name: str, **changes: object) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads((vectors_dir / "appattest" / name).read_text())
    vector["input"].update(changes)
    return vector


@pytest.mark.parametrize(
    ("name", "changes", "needle"),
    [
        ("veehaitch-ios-14.2-assertion.json", {"previous_counter": -1}, "previous_counter"),
        ("veehaitch-ios-14.2-assertion.json", {"app_id": ""}, "input.app_id"),
        ("veehaitch-ios-14.2-attestation.json", {"app_id": ""}, "input.app_id"),
        ("veehaitch-ios-14.2-receipt-1.json", {"app_id": ""}, "input.app_id"),
        ("veehaitch-ios-14.2-receipt-1.json", {"public_key": SECP112R1_KEY}, "input.public_key"),
        ("veehaitch-ios-14.2-receipt-1.json", {"public_key": ED25519_KEY}, "input.public_key"),
        ("veehaitch-ios-14.2-assertion.json", {"public_key": ED25519_KEY}, "input.public_key"),
        ("veehaitch-ios-14.2-assertion.json", {"public_key": "not a key"}, "input.public_key"),
        ("veehaitch-ios-14.2-assertion.json", {"client_data": "\ud800"}, "input.client_data"),
        ("veehaitch-ios-14.2-attestation.json", {"challenge": "\ud800"}, "input.challenge"),
        ("veehaitch-ios-14.2-receipt-1.json", {"app_id": "x\udfff"}, "input.app_id"),
    ],
    ids=[
        "negative-counter",
        "assertion-empty-app-id",
        "attestation-empty-app-id",
        "receipt-empty-app-id",
        "receipt-key-unsupported-curve",
        "receipt-key-not-ec",
        "assertion-key-not-ec",
        "assertion-key-garbage",
        "assertion-client-data-lone-surrogate",
        "attestation-challenge-lone-surrogate",
        "receipt-app-id-lone-surrogate",
    ],
)
def test_unusable_inputs_of_real_vectors_exit_2_and_the_next_file_is_still_verified(
    tmp_path: Path,
    vectors_dir: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    changes: dict[str, object],
    needle: str,
) -> None:
    bad = _write(tmp_path, "bad.json", _shared_vector(vectors_dir, name, **changes))
    good = vectors_dir / "appattest" / name
    assert main(["verify", str(bad), str(good)]) == 2
    unusable, verified = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert unusable == {
        "file": str(bad),
        "valid": None,
        "error": "unusable_vector",
        "message": unusable["message"],
    }
    assert needle in unusable["message"]
    assert verified["file"] == str(good) and verified["valid"] is True


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_json_nested_too_deeply_is_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opening: str
) -> None:
    path = _write(tmp_path, "deep.json", opening * 100_000)
    assert main(["verify", str(path)]) == 2
    conclusion = json.loads(capsys.readouterr().out)
    assert (conclusion["valid"], conclusion["error"]) == (None, "unusable_vector")
    assert "not JSON" in conclusion["message"]


def test_a_verifier_bug_on_one_file_is_reported_and_the_others_are_verified(
    tmp_path: Path,
    ca: AppAttestCA,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A kind whose runner has a bug (a stand-in for any unforeseen exception in a runner).
    def broken_runner(inputs: object, verify_at: datetime) -> dict[str, object]:
        raise ZeroDivisionError("a bug")

    module = types.ModuleType("appintegrity.cli.vectors.broken_kind")
    module.run = broken_runner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(verify_command, "KINDS", (*verify_command.KINDS, "broken-kind"))
    broken = _write(
        tmp_path,
        "b.json",
        {"kind": "broken-kind", "verify_at": "2026-01-01T00:00:00Z", "input": {}},
    )
    good = _write(tmp_path, "good.json", _test_kit_vector(ca, None))
    assert main(["verify", str(broken), str(good)]) == 3
    captured = capsys.readouterr()
    failed, verified = (json.loads(line) for line in captured.out.splitlines())
    assert (failed["valid"], failed["error"]) == (None, "internal_error")
    assert "ZeroDivisionError" in failed["message"]
    assert verified["valid"] is True
    assert "Traceback" in captured.err and "a bug" in captured.err
    # --expect does not count a bug as a match either.
    assert main(["verify", "--expect", str(broken), str(good)]) == 3
    assert "1/2 files conclude" in capsys.readouterr().err


# -- every input the format lists is required: no "valid" without the check it names ----------

PLAY_VECTOR = Path(__file__).parent / "google" / "vectors" / "valid-standard.json"


@pytest.mark.parametrize(
    ("path", "field", "replacement"),
    [
        (PLAY_VECTOR, "certificate_digests", None),
        (PLAY_VECTOR, "certificate_digests", []),
        (PLAY_VECTOR, "max_age_seconds", None),
        ("veehaitch-ios-14.2-receipt-1.json", "app_id", None),
        ("veehaitch-ios-14.2-receipt-1.json", "public_key", None),
        ("veehaitch-ios-14.2-attestation.json", "environment", None),
    ],
    ids=[
        "play-no-certificate-digests",
        "play-empty-certificate-digests",
        "play-no-max-age",
        "receipt-no-app-id",
        "receipt-no-public-key",
        "attestation-no-environment",
    ],
)
def test_a_vector_without_a_listed_input_is_unusable(
    tmp_path: Path,
    vectors_dir: Path,
    capsys: pytest.CaptureFixture[str],
    path: Path | str,
    field: str,
    replacement: object,
) -> None:
    source = path if isinstance(path, Path) else vectors_dir / "appattest" / path
    vector = json.loads(source.read_text())
    assert main(["verify", str(source)]) == 0  # the complete vector is valid
    capsys.readouterr()
    if replacement is None:
        del vector["input"][field]
    else:
        vector["input"][field] = replacement
    assert main(["verify", str(_write(tmp_path, "v.json", vector))]) == 2
    conclusion = json.loads(capsys.readouterr().out)
    assert (conclusion["valid"], conclusion["error"]) == (None, "unusable_vector")
    assert f"input.{field}" in conclusion["message"]
