"""Random and mutated bytes never raise anything but AppleVerificationError."""

from __future__ import annotations

import base64
from datetime import datetime

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appintegrity.apple import (
    AppAttestVerifier,
    AuthenticatorData,
    parse_assertion,
    parse_attestation_object,
)
from appintegrity.apple.certificates import parse_certificate
from appintegrity.errors import AppleVerificationError
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

APP_ID = "ABCDE12345.com.example.fuzz"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def genuine(app_attest_ca: AppAttestCA, attest_now: datetime) -> dict[str, object]:
    phone = SoftwareIPhone(APP_ID, ca=app_attest_ca)
    key_id = phone.generate_key()
    return {
        "key_id": key_id,
        "attestation": phone.attest_key(key_id, "challenge", now=attest_now),
        "assertion": phone.generate_assertion(key_id, "body"),
        "public_key": phone.public_key(key_id),
        "verifier": AppAttestVerifier(APP_ID, trust_roots=app_attest_ca.trust_roots),
        "now": attest_now,
    }


def _mutate(data: bytes, position: int, value: int, cut: int | None) -> bytes:
    mutated = bytearray(data)
    mutated[position % len(mutated)] = value
    if cut is not None:
        mutated = mutated[: cut % (len(mutated) + 1)]
    return bytes(mutated)


def _only_typed_errors(call: object) -> None:
    assert callable(call)
    try:
        call()
    except AppleVerificationError as error:
        assert error.reason.startswith("apple.")


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_into_parsers(data: bytes) -> None:
    _only_typed_errors(lambda: parse_attestation_object(data))
    _only_typed_errors(lambda: parse_assertion(data))
    _only_typed_errors(lambda: AuthenticatorData.parse(data, attested=True))
    _only_typed_errors(lambda: AuthenticatorData.parse(data, attested=False))


@FAST
@given(st.text(max_size=200))
def test_random_text_into_parsers(text: str) -> None:
    _only_typed_errors(lambda: parse_attestation_object(text))
    _only_typed_errors(lambda: parse_assertion(text))


@FAST
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "fmt",
                        "attStmt",
                        "authData",
                        "x5c",
                        "receipt",
                        "signature",
                        "authenticatorData",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_structured_cbor_into_parsers(value: object) -> None:
    data = cbor2.dumps(value)
    _only_typed_errors(lambda: parse_attestation_object(data))
    _only_typed_errors(lambda: parse_assertion(data))


@FAST
@given(st.integers(min_value=0), st.integers(0, 255), st.none() | st.integers(min_value=0))
def test_mutated_attestation_into_verifier(
    genuine: dict[str, object], position: int, value: int, cut: int | None
) -> None:
    verifier = genuine["verifier"]
    assert isinstance(verifier, AppAttestVerifier)
    attestation = genuine["attestation"]
    assert isinstance(attestation, bytes)
    mutated = _mutate(attestation, position, value, cut)
    for form in (mutated, base64.b64encode(mutated).decode()):
        _only_typed_errors(
            lambda form=form: verifier.verify_attestation(
                form,
                key_id=str(genuine["key_id"]),
                challenge="challenge",
                now=genuine["now"],  # type: ignore[arg-type]
            )
        )


@FAST
@given(st.integers(min_value=0), st.integers(0, 255), st.none() | st.integers(min_value=0))
def test_mutated_assertion_into_verifier(
    genuine: dict[str, object], position: int, value: int, cut: int | None
) -> None:
    verifier = genuine["verifier"]
    assert isinstance(verifier, AppAttestVerifier)
    assertion = genuine["assertion"]
    assert isinstance(assertion, bytes)
    mutated = _mutate(assertion, position, value, cut)
    _only_typed_errors(
        lambda: verifier.verify_assertion(
            mutated,
            client_data="body",
            public_key=genuine["public_key"],  # type: ignore[arg-type]
            previous_counter=0,
        )
    )


@FAST
@given(st.binary(max_size=120))
def test_random_public_key_and_key_id(data: bytes) -> None:
    from appintegrity.apple import load_public_key

    _only_typed_errors(lambda: load_public_key(data))
    _only_typed_errors(lambda: load_public_key(base64.b64encode(data).decode()))


def test_trailing_bytes_after_the_attestation_object_are_refused(
    genuine: dict[str, object],
) -> None:
    attestation = genuine["attestation"]
    assert isinstance(attestation, bytes)
    with pytest.raises(AppleVerificationError) as caught:
        parse_attestation_object(attestation + b"\x00")
    assert caught.value.reason == "apple.malformed"


def test_duplicate_map_keys_are_refused() -> None:
    # {"fmt": "apple-appattest", "fmt": "x"} written by hand: cbor2 would not encode it.
    data = (
        b"\xa2"
        + cbor2.dumps("fmt")
        + cbor2.dumps("apple-appattest")
        + cbor2.dumps("fmt")
        + cbor2.dumps("none")
    )
    with pytest.raises(AppleVerificationError) as caught:
        parse_attestation_object(data)
    assert caught.value.reason == "apple.malformed"


def test_certificate_with_an_unknown_x509_version_is_malformed_not_a_crash() -> None:
    der = bytearray(AppAttestCA.generate().intermediate_der)
    # The version field [0] EXPLICIT INTEGER 2 (v3) sits right after the two outer SEQUENCE
    # headers; make it 7, a version X.509 never defined.
    index = der.index(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
    der[index + 4] = 7
    with pytest.raises(AppleVerificationError) as caught:
        parse_certificate(bytes(der), "x5c[1]")
    assert caught.value.reason == "apple.malformed"
