"""App Attest assertion: Apple's server-side assertion steps.

Reference: Apple, "Validating apps that connect to your server" — Verify the assertion.
Reasons in Apple's order: signature, RP ID, counter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.authdata import (
    FLAG_EXTENSION_DATA,
    AuthenticatorData,
    app_id_hashes,
    decode_cbor,
    malformed,
    match_app_id,
    object_bytes,
)
from appintegrity.apple.keys import load_public_key
from appintegrity.errors import AppleVerificationError, Reason

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PLAIN_AUTH_DATA_LENGTH = 37  # rpIdHash (32) ‖ flags (1) ‖ signCount (4)


@dataclass(frozen=True, slots=True)
class Assertion:
    """The decoded CBOR assertion ``{signature, authenticatorData}``."""

    signature: bytes
    auth_data: AuthenticatorData


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """A verified assertion: store ``counter`` as the key's new counter."""

    counter: int
    app_id: str
    extensions: Mapping[str, object] | None


def _assertion_parts(data: bytes | str) -> tuple[bytes, bytes]:
    """The CBOR assertion's ``(signature, authenticatorData)``, both still raw."""
    value = decode_cbor(object_bytes(data, "assertion"), "assertion")
    if not isinstance(value, dict):
        raise malformed("assertion is not a CBOR map")
    signature = value.get("signature")
    raw_auth_data = value.get("authenticatorData")
    if not isinstance(signature, bytes) or not isinstance(raw_auth_data, bytes):
        raise malformed("assertion needs byte strings 'signature' and 'authenticatorData'")
    return signature, raw_auth_data


def parse_assertion(data: bytes | str) -> Assertion:
    """Decode an assertion; every failure is ``AppleVerificationError(apple.malformed)``."""
    signature, raw_auth_data = _assertion_parts(data)
    return Assertion(signature, AuthenticatorData.parse(raw_auth_data, attested=False))


def check_assertion(
    assertion: bytes | str,
    *,
    client_data: bytes | str,
    public_key: ec.EllipticCurvePublicKey | bytes | str,
    previous_counter: int,
    app_ids: tuple[tuple[str, bytes], ...],
) -> VerifiedAssertion:
    """The assertion steps against precomputed ``(app id, RP ID hash)`` pairs."""
    # The stored counter starts at the attestation's 0; below that (or not an integer) is a
    # caller's bug that would let a counter-0 assertion through step 6.
    if not isinstance(previous_counter, int) or isinstance(previous_counter, bool):
        raise TypeError("previous_counter must be the stored counter (an int)")
    if previous_counter < 0:
        raise ValueError(f"previous_counter must be >= 0, found {previous_counter}")
    signature, raw_auth_data = _assertion_parts(assertion)
    plain = len(raw_auth_data) == _PLAIN_AUTH_DATA_LENGTH
    if plain and not raw_auth_data[32] & FLAG_EXTENSION_DATA:
        # What nearly every assertion is: rpIdHash ‖ flags ‖ signCount and nothing else, read
        # in place (AuthenticatorData.parse reads it the same way, building an object first).
        rp_id_hash, extensions = raw_auth_data[:32], None
        counter = int.from_bytes(raw_auth_data[33:37], "big")
    else:
        auth_data = AuthenticatorData.parse(raw_auth_data, attested=False)
        rp_id_hash, counter = auth_data.rp_id_hash, auth_data.counter
        extensions = auth_data.extensions
    if isinstance(client_data, str):
        try:
            client_data = client_data.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 bytes a device could sign
            raise malformed("client data is not valid Unicode text") from None
    elif not isinstance(client_data, bytes | bytearray | memoryview):
        raise TypeError("client_data must be bytes or text")
    key = (
        public_key
        if isinstance(public_key, ec.EllipticCurvePublicKey)
        and isinstance(public_key.curve, ec.SECP256R1)
        else load_public_key(public_key)
    )

    # Steps 1–3: clientDataHash, then nonce = SHA-256(authenticatorData ‖ clientDataHash).
    nonce = hashlib.sha256(raw_auth_data + hashlib.sha256(client_data).digest()).digest()
    # Step 4: the signature over the nonce, with the key stored at attestation.
    try:
        key.verify(signature, nonce, _ECDSA_SHA256)
    except InvalidSignature:
        raise AppleVerificationError(
            Reason.APPLE_SIGNATURE_INVALID,
            "the assertion signature does not verify with the stored public key "
            "over SHA-256(authenticatorData ‖ SHA-256(clientData))",
        ) from None

    # Step 5: RP ID hash = SHA-256(TEAMID.bundleId).
    app_id = match_app_id(rp_id_hash, app_ids)
    if app_id is None:
        raise AppleVerificationError(
            Reason.APPLE_APP_ID_MISMATCH,
            f"the RP ID hash {rp_id_hash.hex()} is not SHA-256 of any accepted app id "
            f"({', '.join(name for name, _ in app_ids) or 'none: the key is for another app'})",
        )

    # Step 6: the counter must be strictly greater than the stored one (replay protection).
    if counter <= previous_counter:
        raise AppleVerificationError(
            Reason.APPLE_COUNTER_INVALID,
            f"assertion counter {counter} is not above the stored counter "
            f"{previous_counter}: replayed or out-of-order assertion",
        )
    return VerifiedAssertion(counter, app_id, extensions)


def verify_assertion(
    assertion: bytes | str,
    *,
    client_data: bytes | str,
    public_key: ec.EllipticCurvePublicKey | bytes | str,
    previous_counter: int,
    app_id: str | Sequence[str],
) -> VerifiedAssertion:
    """Verify an assertion made by an attested key for ``app_id`` (one or several)."""
    return check_assertion(
        assertion,
        client_data=client_data,
        public_key=public_key,
        previous_counter=previous_counter,
        app_ids=app_id_hashes(app_id),
    )
