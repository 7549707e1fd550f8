"""``inspect`` for Play Integrity tokens: readable, JSON, header-only and failure outputs."""

from __future__ import annotations

import json

from play_support import KEYS, NOW, REQUEST_HASH

from appintegrity.cli.inspect_play_integrity import explain
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice


def test_decrypted_verdict_is_shown_to_a_person(device: SoftwareAndroidDevice) -> None:
    token = device.request_integrity_token(
        request_hash=REQUEST_HASH, now=NOW, play_protect="HIGH_RISK"
    )
    status, text = explain(
        token,
        decryption_key=KEYS.decryption_key_b64,
        verification_key=KEYS.verification_key_b64,
        as_json=False,
    )
    assert status == 0
    assert "signature verified" in text
    assert f"requestHash {REQUEST_HASH}" in text
    assert "MEETS_DEVICE_INTEGRITY" in text and "(level: device)" in text
    assert "play protect: HIGH_RISK" in text


def test_decrypted_verdict_as_json(device: SoftwareAndroidDevice) -> None:
    payload = device.verdict_payload(nonce="bm9uY2Utbm9uY2Utbm9uY2U", now=NOW)
    status, text = explain(
        device.seal(payload),
        decryption_key=KEYS.decryption_key_b64,
        verification_key=KEYS.verification_key_b64,
        as_json=True,
    )
    document = json.loads(text)
    assert status == 0
    assert document["verified"] is True
    assert document["payload"] == payload
    assert document["summary"]["nonce"] == "bm9uY2Utbm9uY2Utbm9uY2U"


def test_without_keys_only_the_header_is_shown(device: SoftwareAndroidDevice) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    status, text = explain(token, decryption_key=None, verification_key=None, as_json=False)
    assert status == 0
    assert "alg=A256KW, enc=A256GCM" in text and "encrypted" in text
    status, text = explain(token, decryption_key=None, verification_key=None, as_json=True)
    assert json.loads(text)["header"] == {"alg": "A256KW", "enc": "A256GCM"}


def test_malformed_token_and_wrong_keys_exit_1_with_the_reason(
    device: SoftwareAndroidDevice,
) -> None:
    status, text = explain("garbage", decryption_key=None, verification_key=None, as_json=False)
    assert status == 1 and "google.malformed" in text
    other = PlayIntegrityTestKeys.generate()
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    status, text = explain(
        token,
        decryption_key=KEYS.decryption_key_b64,
        verification_key=other.verification_key_b64,
        as_json=True,
    )
    assert status == 1 and json.loads(text)["reason"] == "google.signature_invalid"
    status, text = explain(
        token, decryption_key=KEYS.decryption_key_b64, verification_key=None, as_json=False
    )
    assert status == 1 and "both" in text
    status, text = explain(
        token, decryption_key="bad!", verification_key=KEYS.verification_key_b64, as_json=False
    )
    assert status == 1 and "config.invalid" in text
