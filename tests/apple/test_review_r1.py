"""Review findings on the App Attest core: each test failed before its fix."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from appintegrity.apple import AppAttestVerifier, AuthenticatorData, verify_assertion
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

APP_ID = "TEAM123456.com.example.app"
OTHER_APP_ID = "TEAM999999.com.example.other"
_KEY = ec.generate_private_key(ec.SECP256R1())
_POINT = _KEY.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _signed_assertion(trailing: bytes, client_data: bytes = b"body", counter: int = 1) -> bytes:
    """A correctly signed assertion whose authenticator data ends with ``trailing``."""
    auth_data = (
        hashlib.sha256(APP_ID.encode()).digest() + b"\x40" + counter.to_bytes(4, "big") + trailing
    )
    nonce = hashlib.sha256(auth_data + hashlib.sha256(client_data).digest()).digest()
    signature = _KEY.sign(nonce, ec.ECDSA(hashes.SHA256()))
    return cbor2.dumps({"signature": signature, "authenticatorData": auth_data})


def _verify(assertion: bytes, previous_counter: int = 0) -> object:
    return verify_assertion(
        assertion,
        client_data=b"body",
        public_key=_POINT,
        previous_counter=previous_counter,
        app_id=APP_ID,
    )


def test_extension_key_with_no_text_form_is_malformed_not_a_crash() -> None:
    # A CBOR bignum key past Python's int-to-text digit limit made str() raise ValueError.
    assertion = _signed_assertion(cbor2.dumps({10**5000: 1}))
    with pytest.raises(AppleVerificationError) as caught:
        _verify(assertion)
    assert caught.value.reason == Reason.APPLE_MALFORMED


def test_extension_keys_that_read_alike_are_refused() -> None:
    # {1: ..., "1": ...} used to collapse silently into one exposed entry.
    assertion = _signed_assertion(cbor2.dumps({1: "a", "1": "b"}))
    with pytest.raises(AppleVerificationError) as caught:
        _verify(assertion)
    assert caught.value.reason == Reason.APPLE_MALFORMED


def test_ios27_extension_map_still_passes() -> None:
    extensions = {"apple_bundle_version_01": "1", "apple_validation_category_01": b"\1\0\0\0"}
    result = _verify(_signed_assertion(cbor2.dumps(extensions)))
    assert dict(result.extensions) == extensions  # type: ignore[attr-defined]


_keys = st.one_of(
    st.text(max_size=8),
    st.integers(),
    # Integers past Python's 4300-digit text limit (built lazily: hypothesis reprs strategies).
    st.integers(4300, 4400).map(lambda digits: 10**digits),
    st.integers(4300, 4400).map(lambda digits: -(10**digits)),
    st.binary(max_size=8),
    st.tuples(st.integers()),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, st.integers() | st.text(max_size=4), max_size=4))
def test_any_extension_map_parses_or_is_malformed(extensions: dict[object, object]) -> None:
    data = (
        hashlib.sha256(APP_ID.encode()).digest()
        + b"\x40"
        + (1).to_bytes(4, "big")
        + cbor2.dumps(extensions)
    )
    try:
        parsed = AuthenticatorData.parse(data, attested=False)
    except AppleVerificationError as error:
        assert error.reason == Reason.APPLE_MALFORMED
    else:
        assert parsed.extensions is not None
        assert all(isinstance(key, str) for key in parsed.extensions)


def test_verifier_refuses_a_key_of_an_app_it_does_not_accept() -> None:
    # app_id= used to widen the verifier to any app named by the stored key.
    ca = AppAttestCA.generate()
    other_phone = SoftwareIPhone(OTHER_APP_ID, ca=ca)
    key_id = other_phone.generate_key()
    verifier = AppAttestVerifier(APP_ID, trust_roots=ca.trust_roots)
    with pytest.raises(AppleVerificationError) as caught:
        verifier.verify_assertion(
            other_phone.generate_assertion(key_id, b"body"),
            client_data=b"body",
            public_key=other_phone.public_key(key_id),
            previous_counter=0,
            app_id=OTHER_APP_ID,
        )
    assert caught.value.reason == Reason.APPLE_APP_ID_MISMATCH
    # Its own app still passes, named or not.
    phone = SoftwareIPhone(APP_ID, ca=ca)
    own = phone.generate_key()
    for app_id in (APP_ID, None):
        result = verifier.verify_assertion(
            phone.generate_assertion(own, b"body"),
            client_data=b"body",
            public_key=phone.public_key(own),
            previous_counter=phone.counter(own) - 1,
            app_id=app_id,
        )
        assert result.app_id == APP_ID


@pytest.mark.parametrize("previous_counter", [-1, -(2**40)])
def test_negative_previous_counter_is_a_caller_error(previous_counter: int) -> None:
    # Used to let an assertion with counter 0 (below any counter a device sends) pass step 6.
    with pytest.raises(ValueError, match="previous_counter"):
        _verify(_signed_assertion(b"", counter=0), previous_counter=previous_counter)


@pytest.mark.parametrize("previous_counter", [None, True, 1.0, "0"])
def test_previous_counter_that_is_not_an_int_is_a_caller_error(previous_counter: object) -> None:
    with pytest.raises(TypeError, match="previous_counter"):
        _verify(_signed_assertion(b""), previous_counter=previous_counter)  # type: ignore[arg-type]


def test_assertion_counter_equal_to_the_stored_one_is_refused() -> None:
    with pytest.raises(AppleVerificationError) as caught:
        _verify(_signed_assertion(b"", counter=7), previous_counter=7)
    assert caught.value.reason == Reason.APPLE_COUNTER_INVALID
    assert _verify(_signed_assertion(b"", counter=8), previous_counter=7).counter == 8  # type: ignore[attr-defined]


def test_client_data_text_without_utf8_bytes_is_malformed() -> None:
    """A lone surrogate (JSON can escape one) has no UTF-8 form a device could have signed."""
    with pytest.raises(AppleVerificationError) as caught:
        verify_assertion(
            _signed_assertion(b""),
            client_data="\ud800",
            public_key=_POINT,
            previous_counter=0,
            app_id=APP_ID,
        )
    assert caught.value.reason == Reason.APPLE_MALFORMED
