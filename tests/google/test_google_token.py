"""Local token reading: decrypt (A256KW / A256GCM), verify (ES256), refuse everything else."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe, jws
from joserfc.jwk import ECKey, OctKey
from play_support import KEYS, NOW, PACKAGE, REQUEST_HASH

from appintegrity.errors import ConfigError, GoogleVerificationError
from appintegrity.google import PlayIntegrityKeys, decode_token_locally
from appintegrity.google.token import read_jwe_header
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice

OTHER_KEYS = PlayIntegrityTestKeys.generate()


def reason_of(token: str) -> str:
    with pytest.raises(GoogleVerificationError) as caught:
        decode_token_locally(token, KEYS.as_keys())
    return caught.value.reason


def test_token_made_as_play_does_decodes_to_its_payload(device: SoftwareAndroidDevice) -> None:
    payload = device.verdict_payload(request_hash=REQUEST_HASH, now=NOW)
    token = device.seal(payload)
    assert decode_token_locally(token, KEYS.as_keys()) == payload


def test_keys_read_from_play_console_spellings() -> None:
    keys = PlayIntegrityKeys.from_base64(KEYS.decryption_key_b64, KEYS.verification_key_b64)
    assert keys.decryption_key == KEYS.decryption_key
    assert keys.verification_key.public_numbers() == KEYS.signing_key.public_key().public_numbers()


def test_keys_with_wrong_sizes_or_types_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        PlayIntegrityKeys.from_base64(
            base64.b64encode(b"x" * 16).decode(), KEYS.verification_key_b64
        )
    with pytest.raises(ConfigError):
        PlayIntegrityKeys.from_base64(KEYS.decryption_key_b64, "not base64!")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ConfigError):
        PlayIntegrityKeys(KEYS.decryption_key, p384)


def test_token_encrypted_with_another_key_fails_decryption(device: SoftwareAndroidDevice) -> None:
    token = device.seal({"a": 1}, decryption_key=OTHER_KEYS.decryption_key)
    assert reason_of(token) == "google.decryption_failed"


def test_token_signed_with_another_key_fails_signature(device: SoftwareAndroidDevice) -> None:
    token = device.seal({"a": 1}, signing_key=OTHER_KEYS.signing_key)
    assert reason_of(token) == "google.signature_invalid"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "A128KW", "enc": "A256GCM"},
        {"alg": "dir", "enc": "A256GCM"},
        {"alg": "A256KW", "enc": "A128GCM"},
        {"alg": "A256KW", "enc": "A256CBC-HS512"},
        {"alg": "A256KW", "enc": "A256GCM", "zip": "DEF"},
        {"alg": "A256KW", "enc": "A256GCM", "crit": ["exp"]},
        {"enc": "A256GCM"},
    ],
)
def test_jwe_with_other_algorithms_is_refused_before_decrypting(
    device: SoftwareAndroidDevice, header: dict[str, object]
) -> None:
    # The raw builder still uses A256KW/A256GCM keys: only the header check can refuse it.
    assert reason_of(device.seal({"a": 1}, jwe_header=header)) == "google.decryption_failed"


@pytest.mark.parametrize(
    "header",
    [{"alg": "none"}, {"alg": "HS256"}, {"alg": "ES384"}, {"alg": "ES256", "crit": ["b64"]}, {}],
)
def test_jws_with_other_algorithms_is_refused(
    device: SoftwareAndroidDevice, header: dict[str, object]
) -> None:
    assert reason_of(device.seal({"a": 1}, jws_header=header)) == "google.signature_invalid"


def test_jws_with_extra_header_fields_like_kid_is_accepted(device: SoftwareAndroidDevice) -> None:
    token = device.seal({"a": 1}, jws_header={"alg": "ES256", "kid": "x", "typ": "JWT"})
    assert decode_token_locally(token, KEYS.as_keys()) == {"a": 1}


def test_signed_payload_that_is_not_a_json_object_is_malformed(
    device: SoftwareAndroidDevice,
) -> None:
    assert reason_of(device.seal(b"[1, 2]")) == "google.malformed"
    assert reason_of(device.seal(b"\xff\xfe")) == "google.malformed"


def test_encrypted_content_that_is_not_a_jws_is_malformed() -> None:
    token = jwe.encrypt_compact(
        {"alg": "A256KW", "enc": "A256GCM"}, b"just text", OctKey.import_key(KEYS.decryption_key)
    )
    assert reason_of(token) == "google.malformed"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b.c",
        "a.b.c.d.e.f",
        "bm90IGpzb24.e30.e30.e30.e30",
        "W10.e30.e30.e30.e30",
        "!!.a.b.c.d",
        "x" * 70_000,
    ],
)
def test_structurally_broken_tokens_are_malformed(token: str) -> None:
    assert reason_of(token) == "google.malformed"


def test_truncated_token_is_refused(device: SoftwareAndroidDevice) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    assert reason_of(token[:-10]) == "google.decryption_failed"
    assert reason_of(token.rsplit(".", 1)[0]) == "google.malformed"


def test_interoperates_with_joserfc_in_both_directions(device: SoftwareAndroidDevice) -> None:
    token = device.request_integrity_token(request_hash=REQUEST_HASH, now=NOW)
    inner = jwe.decrypt_compact(token, OctKey.import_key(KEYS.decryption_key)).plaintext
    assert inner is not None
    verified = jws.deserialize_compact(inner, ECKey.import_key(KEYS.signing_key.public_key()))
    assert decode_token_locally(token, KEYS.as_keys()) == json.loads(verified.payload)


def test_read_jwe_header_needs_no_key(device: SoftwareAndroidDevice) -> None:
    token = device.request_integrity_token(nonce="n" * 16, now=NOW)
    assert read_jwe_header(token) == {"alg": "A256KW", "enc": "A256GCM"}


_VALID = SoftwareAndroidDevice(PACKAGE, keys=KEYS).request_integrity_token(
    request_hash=REQUEST_HASH, now=NOW
)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ é\x00"


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=len(_VALID) - 1),
    replacement=st.text(alphabet=_ALPHABET, max_size=8),
    cut=st.integers(min_value=0, max_value=8),
)
def test_mutated_tokens_raise_only_the_typed_error(
    position: int, replacement: str, cut: int
) -> None:
    mutated = _VALID[:position] + replacement + _VALID[position + cut :]
    try:
        payload = decode_token_locally(mutated, KEYS.as_keys())
    except GoogleVerificationError as exc:
        assert exc.reason in {
            "google.malformed",
            "google.decryption_failed",
            "google.signature_invalid",
        }
    else:
        # Only spellings that decode to the same bytes can survive (e.g. unused base64 bits).
        assert payload == decode_token_locally(_VALID, KEYS.as_keys())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.hex()))
def test_arbitrary_text_raises_only_the_typed_error(text: str) -> None:
    with pytest.raises(GoogleVerificationError):
        decode_token_locally(text, KEYS.as_keys())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_signed_bytes_raise_only_the_typed_error_or_decode(data: bytes) -> None:
    token = SoftwareAndroidDevice(PACKAGE, keys=KEYS).seal(data)
    try:
        payload = decode_token_locally(token, KEYS.as_keys())
    except GoogleVerificationError as exc:
        assert exc.reason == "google.malformed"
    else:
        assert isinstance(payload, dict)
