"""Every real App Attest vector in ../shared/vectors/appattest verifies as its file says."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appintegrity.apple import (
    AppAttestVerifier,
    Environment,
    load_public_key,
    verify_assertion,
    verify_attestation,
)
from appintegrity.errors import AppleVerificationError

VECTORS = Path(os.environ["APPINTEGRITY_SHARED_VECTORS"]) / "appattest"


def _vectors(kind: str) -> list[Path]:
    return sorted(
        path
        for path in VECTORS.glob("*.json")
        if json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
    )


def _load(path: Path) -> tuple[dict[str, Any], datetime, dict[str, Any]]:
    vector = json.loads(path.read_text(encoding="utf-8"))
    verify_at = datetime.fromisoformat(vector["verify_at"].replace("Z", "+00:00"))
    return vector["input"], verify_at, vector["expect"]


def _challenge_kwargs(inputs: dict[str, Any]) -> dict[str, Any]:
    if "challenge" in inputs:
        return {"challenge": inputs["challenge"]}
    if "challenge_b64" in inputs:
        return {"challenge": base64.b64decode(inputs["challenge_b64"])}
    return {"client_data_hash": base64.b64decode(inputs["client_data_hash_b64"])}


def test_vectors_are_present() -> None:
    assert len(_vectors("apple-attestation")) >= 10
    assert len(_vectors("apple-assertion")) >= 5


@pytest.mark.parametrize("path", _vectors("apple-attestation"), ids=lambda p: p.stem)
def test_attestation_vector(path: Path) -> None:
    inputs, verify_at, expect = _load(path)
    if not expect["valid"]:
        with pytest.raises(AppleVerificationError) as caught:
            verify_attestation(
                inputs["attestation"],
                key_id=inputs["key_id"],
                app_id=inputs["app_id"],
                environment=inputs["environment"],
                now=verify_at,
                **_challenge_kwargs(inputs),
            )
        assert caught.value.reason == expect["reason"]
        return
    key = verify_attestation(
        inputs["attestation"],
        key_id=inputs["key_id"],
        app_id=inputs["app_id"],
        environment=inputs["environment"],
        now=verify_at,
        **_challenge_kwargs(inputs),
    )
    assert key.key_id_b64 == base64.b64encode(base64.b64decode(inputs["key_id"])).decode()
    assert key.environment == Environment(inputs["environment"])
    assert key.app_id == inputs["app_id"]
    assert key.counter == 0
    assert len(key.public_key) == 65
    assert (len(key.receipt) > 0) == expect["receipt_present"]
    pem = load_public_key(key.public_key).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    if "public_key_pem" in expect:
        assert pem.decode() == expect["public_key_pem"]


@pytest.mark.parametrize("path", _vectors("apple-assertion"), ids=lambda p: p.stem)
def test_assertion_vector(path: Path) -> None:
    inputs, _, expect = _load(path)
    client_data = (
        inputs["client_data"]
        if "client_data" in inputs
        else base64.b64decode(inputs["client_data_b64"])
    )
    verifier = AppAttestVerifier(inputs["app_id"])
    if not expect["valid"]:
        with pytest.raises(AppleVerificationError) as caught:
            verifier.verify_assertion(
                inputs["assertion"],
                client_data=client_data,
                public_key=inputs["public_key"],
                previous_counter=inputs["previous_counter"],
            )
        assert caught.value.reason == expect["reason"]
        return
    result = verify_assertion(
        inputs["assertion"],
        client_data=client_data,
        public_key=inputs["public_key"],
        previous_counter=inputs["previous_counter"],
        app_id=inputs["app_id"],
    )
    assert result.counter == expect["counter"]
    assert result.app_id == inputs["app_id"]


def test_ios27_extension_map_is_parsed() -> None:
    inputs, verify_at, _ = _load(VECTORS / "apple-docs-2026-sample-ios27-prod-attestation.json")
    key = verify_attestation(
        inputs["attestation"],
        key_id=inputs["key_id"],
        app_id=inputs["app_id"],
        client_data_hash=base64.b64decode(inputs["client_data_hash_b64"]),
        now=verify_at,
    )
    assert key.extensions is not None
    assert dict(key.extensions) == {
        "apple_bundle_version_01": "1",
        "apple_validation_category_01": b"\x01\x00\x00\x00",
    }


def test_key_id_spellings_are_equivalent() -> None:
    inputs, verify_at, _ = _load(VECTORS / "uebelack-production-attestation.json")
    raw = base64.b64decode(inputs["key_id"])
    spellings: list[str | bytes] = [
        inputs["key_id"],
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
        raw,
    ]
    for spelling in spellings:
        key = verify_attestation(
            inputs["attestation"],
            key_id=spelling,
            app_id=inputs["app_id"],
            challenge=inputs["challenge"],
            now=verify_at,
        )
        assert key.key_id == raw


def test_attestation_object_as_base64url_without_padding() -> None:
    inputs, verify_at, _ = _load(VECTORS / "uebelack-production-attestation.json")
    raw = base64.b64decode(inputs["attestation"])
    for spelling in (raw, base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        key = verify_attestation(
            spelling,
            key_id=inputs["key_id"],
            app_id=inputs["app_id"],
            challenge=inputs["challenge"],
            now=verify_at,
        )
        assert key.environment is Environment.PRODUCTION


def test_development_attestation_is_refused_in_production_and_accepted_in_development() -> None:
    inputs, verify_at, _ = _load(VECTORS / "uebelack-development-attestation.json")
    kwargs = {"key_id": inputs["key_id"], "challenge": inputs["challenge"], "now": verify_at}
    with pytest.raises(AppleVerificationError) as caught:
        AppAttestVerifier(inputs["app_id"]).verify_attestation(inputs["attestation"], **kwargs)
    assert caught.value.reason == "apple.environment_mismatch"
    key = AppAttestVerifier(inputs["app_id"], environment="development").verify_attestation(
        inputs["attestation"], **kwargs
    )
    assert key.environment is Environment.DEVELOPMENT


def test_real_attestation_for_another_app_is_refused() -> None:
    inputs, verify_at, _ = _load(VECTORS / "uebelack-production-attestation.json")
    with pytest.raises(AppleVerificationError) as caught:
        verify_attestation(
            inputs["attestation"],
            key_id=inputs["key_id"],
            app_id="V8H6LQ9448.io.uebelacker.Other",
            challenge=inputs["challenge"],
            now=verify_at,
        )
    assert caught.value.reason == "apple.app_id_mismatch"


def test_real_attestation_with_another_challenge_is_refused() -> None:
    inputs, verify_at, _ = _load(VECTORS / "uebelack-production-attestation.json")
    with pytest.raises(AppleVerificationError) as caught:
        verify_attestation(
            inputs["attestation"],
            key_id=inputs["key_id"],
            app_id=inputs["app_id"],
            challenge=inputs["challenge"] + "x",
            now=verify_at,
        )
    assert caught.value.reason == "apple.nonce_mismatch"


def test_real_attestation_before_the_leaf_is_valid_is_refused() -> None:
    inputs, _, _ = _load(VECTORS / "uebelack-production-attestation.json")
    with pytest.raises(AppleVerificationError) as caught:
        verify_attestation(
            inputs["attestation"],
            key_id=inputs["key_id"],
            app_id=inputs["app_id"],
            challenge=inputs["challenge"],
            now=datetime.fromisoformat("2019-01-01T00:00:00+00:00"),
        )
    assert caught.value.reason == "apple.certificate_chain_invalid"
