"""App Attest attestation: Apple's nine server-side validation steps.

Reference: Apple, "Validating apps that connect to your server" — Verify the attestation.
Each failure raises ``AppleVerificationError`` with the reason of the first step that fails,
in Apple's order: chain, nonce, key id, RP ID, counter, aaguid, credential id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from threading import Lock

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.assertion import VerifiedAssertion, check_assertion
from appintegrity.apple.authdata import (
    AuthenticatorData,
    app_id_hashes,
    decode_cbor,
    malformed,
    match_app_id,
    object_bytes,
)
from appintegrity.apple.certificates import (
    CERTIFICATE_ERRORS,
    ChainVerifier,
    apple_app_attestation_root,
    parse_certificate,
)
from appintegrity.apple.keys import public_key_point
from appintegrity.encoding import EncodingError, normalize_key_id
from appintegrity.errors import AppleVerificationError, Reason

FORMAT = "apple-appattest"
NONCE_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113635.100.8.2")


class Environment(StrEnum):
    """Which App Attest environment the key was made in, as told by the aaguid."""

    PRODUCTION = "production"
    DEVELOPMENT = "development"

    @property
    def aaguid(self) -> bytes:
        return AAGUIDS[self]

    @classmethod
    def from_aaguid(cls, aaguid: bytes | None) -> Environment | None:
        for environment, value in AAGUIDS.items():
            if aaguid is not None and hmac.compare_digest(aaguid, value):
                return environment
        return None


AAGUIDS = {
    Environment.PRODUCTION: b"appattest" + b"\x00" * 7,
    Environment.DEVELOPMENT: b"appattestdevelop",
}


@dataclass(frozen=True, slots=True)
class AttestedKey:
    """A key that passed attestation: store ``public_key`` and ``counter`` for assertions."""

    key_id: bytes
    public_key: bytes
    environment: Environment
    app_id: str
    receipt: bytes
    counter: int
    certificate_chain: tuple[bytes, ...]
    extensions: Mapping[str, object] | None

    @property
    def key_id_b64(self) -> str:
        """The key id as the device APIs spell it (standard base64)."""
        return base64.b64encode(self.key_id).decode("ascii")


@dataclass(frozen=True, slots=True)
class AttestationObject:
    """The decoded CBOR attestation object (fields as Apple names them)."""

    fmt: str
    x5c: tuple[bytes, ...]
    receipt: bytes
    auth_data: AuthenticatorData


def parse_attestation_object(data: bytes | str) -> AttestationObject:
    """Decode ``{fmt, attStmt: {x5c, receipt}, authData}``; every failure is a typed error."""
    value = decode_cbor(object_bytes(data, "attestation"), "attestation object")
    if not isinstance(value, dict):
        raise malformed("attestation object is not a CBOR map")
    fmt = value.get("fmt")
    if not isinstance(fmt, str):
        raise malformed("attestation object has no text 'fmt'")
    if fmt != FORMAT:
        raise AppleVerificationError(
            Reason.APPLE_UNSUPPORTED_FORMAT, f"fmt is {fmt[:64]!r}, expected {FORMAT!r}"
        )
    statement = value.get("attStmt")
    if not isinstance(statement, dict):
        raise malformed("attestation object has no 'attStmt' map")
    x5c = statement.get("x5c")
    if (
        not isinstance(x5c, list)
        or not x5c
        or not all(isinstance(item, bytes) and item for item in x5c)
    ):
        raise malformed("attStmt.x5c must be a non-empty array of DER certificates")
    receipt = statement.get("receipt", b"")
    if not isinstance(receipt, bytes):
        raise malformed("attStmt.receipt must be a byte string")
    raw_auth_data = value.get("authData")
    if not isinstance(raw_auth_data, bytes):
        raise malformed("attestation object has no byte-string 'authData'")
    auth_data = AuthenticatorData.parse(raw_auth_data, attested=True)
    if auth_data.aaguid is None or auth_data.credential_id is None:
        raise malformed("authData carries no attested credential data")
    return AttestationObject(fmt, tuple(x5c), receipt, auth_data)


def _der_element(data: bytes, offset: int, tag: int, what: str) -> tuple[int, int]:
    """Strict DER: one TLV with ``tag`` at ``offset``, definite minimal length; (start, end)."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise malformed(f"nonce extension: expected {what}")
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or start + count > len(data):
            raise malformed(f"nonce extension: bad length of {what}")
        length = int.from_bytes(data[start : start + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            raise malformed(f"nonce extension: non-minimal length of {what}")
        start += count
    end = start + length
    if end > len(data):
        raise malformed(f"nonce extension: {what} runs past the end")
    return start, end


def credential_nonce(certificate: x509.Certificate) -> bytes | None:
    """The nonce in extension 1.2.840.113635.100.8.2: ``SEQUENCE { [1] EXPLICIT OCTET STRING }``.

    Parsed as DER, never read at a fixed offset; ``None`` when the extension is absent.
    """
    try:
        extension = certificate.extensions.get_extension_for_oid(NONCE_EXTENSION_OID)
    except x509.ExtensionNotFound:
        return None
    except CERTIFICATE_ERRORS as exc:
        raise malformed(f"credential certificate extensions are undecodable ({exc})") from exc
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise malformed("nonce extension has an unexpected type")
    der = value.value
    start, end = _der_element(der, 0, 0x30, "a SEQUENCE")
    if end != len(der):
        raise malformed("nonce extension: bytes after the SEQUENCE")
    inner_start, inner_end = _der_element(der, start, 0xA1, "[1] EXPLICIT")
    if inner_end != end:
        raise malformed("nonce extension: the SEQUENCE holds more than the [1] element")
    octets_start, octets_end = _der_element(der, inner_start, 0x04, "an OCTET STRING")
    if octets_end != inner_end:
        raise malformed("nonce extension: bytes after the OCTET STRING")
    return der[octets_start:octets_end]


MIN_CLIENT_DATA_HASH_BYTES = 16


def client_data_hash_for(challenge: str | bytes | None, client_data_hash: bytes | None) -> bytes:
    """Apple step 2: clientDataHash = SHA-256(challenge), unless the app passed a hash itself."""
    if (challenge is None) == (client_data_hash is None):
        raise ValueError("pass exactly one of challenge and client_data_hash")
    if client_data_hash is not None:
        if not isinstance(client_data_hash, bytes | bytearray):
            raise TypeError("client_data_hash must be bytes")
        # A server's hash or random challenge is never this short. An empty (or near-empty)
        # one would let a genuine attestation's trailing bytes pass for the clientDataHash
        # (authData ‖ clientDataHash is what the nonce covers): refuse it as a caller error.
        if len(client_data_hash) < MIN_CLIENT_DATA_HASH_BYTES:
            raise ValueError(
                f"client_data_hash must be at least {MIN_CLIENT_DATA_HASH_BYTES} bytes,"
                f" found {len(client_data_hash)}"
            )
        return bytes(client_data_hash)
    if isinstance(challenge, str):
        return hashlib.sha256(challenge.encode("utf-8")).digest()
    if isinstance(challenge, bytes | bytearray):
        return hashlib.sha256(challenge).digest()
    raise TypeError("challenge must be text or bytes")


def _expected_key_id(key_id: str | bytes) -> bytes:
    if isinstance(key_id, str) and len(key_id) == 44:
        # The device APIs' own spelling (padded standard base64) is by far the most common.
        try:
            raw = binascii.a2b_base64(key_id, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if len(raw) == 32:
                return raw
    try:
        return normalize_key_id(key_id)
    except EncodingError as exc:
        raise malformed(f"key id is not 32 bytes in base64, base64url or hex ({exc})") from exc


_default_chain: ChainVerifier | None = None
_custom_chains: dict[tuple[bytes, ...], ChainVerifier] = {}
_chains_lock = Lock()


def _chain_verifier(trust_roots: Sequence[x509.Certificate] | None) -> ChainVerifier:
    """Shared chain verifiers, so module-level calls also verify each CA link only once."""
    global _default_chain
    if trust_roots is None:
        if _default_chain is None:
            _default_chain = ChainVerifier([apple_app_attestation_root()])
        return _default_chain
    key = tuple(root.fingerprint(hashes.SHA256()) for root in trust_roots)
    with _chains_lock:
        chain = _custom_chains.get(key)
        if chain is None:
            if len(_custom_chains) >= 64:
                _custom_chains.clear()
            chain = _custom_chains[key] = ChainVerifier(trust_roots)
    return chain


class AppAttestVerifier:
    """Verifies attestations and assertions for one or more app ids in one environment.

    ``trust_roots=None`` uses Apple's embedded, fingerprint-pinned root; tests pass the
    test kit's root. Verified chain links are cached per set of trust roots, shared by all
    verifiers of the process, so the intermediate's signature is checked once.
    """

    def __init__(
        self,
        app_ids: str | Sequence[str],
        *,
        environment: Environment | str = Environment.PRODUCTION,
        trust_roots: Sequence[x509.Certificate] | None = None,
    ) -> None:
        self._app_ids = app_id_hashes(app_ids)
        self.environment = Environment(environment)
        self._chain = _chain_verifier(trust_roots)
        self._single_app: dict[str, tuple[tuple[str, bytes], ...]] = {
            name: ((name, digest),) for name, digest in self._app_ids
        }

    @property
    def app_ids(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._app_ids)

    @property
    def chain_verifier(self) -> ChainVerifier:
        """The chain verifier, whose ``stats`` show how often CA links were reused."""
        return self._chain

    def verify_attestation(
        self,
        attestation: bytes | str,
        *,
        key_id: str | bytes,
        challenge: str | bytes | None = None,
        client_data_hash: bytes | None = None,
        also_client_data_hash: bytes | None = None,
        now: datetime,
    ) -> AttestedKey:
        """Run Apple's attestation steps; return the attested key or raise with the reason.

        ``also_client_data_hash``: a second clientDataHash the app may have used instead,
        checked in the same pass (e.g. the challenge's own random bytes, which some apps —
        Apple's samples among them — pass to ``attestKey`` unhashed).
        """
        client_hashes = [client_data_hash_for(challenge, client_data_hash)]
        if also_client_data_hash is not None:
            client_hashes.append(client_data_hash_for(None, also_client_data_hash))
        expected_key_id = _expected_key_id(key_id)
        parsed = parse_attestation_object(attestation)
        auth_data = parsed.auth_data

        # Step 1: the x5c chain to the trusted root, at `now`.
        leaf = parse_certificate(parsed.x5c[0], "credential certificate (x5c[0])")
        self._chain.verify(parsed.x5c, now, leaf=leaf)

        # Steps 2–4: nonce = SHA-256(authData ‖ clientDataHash) must equal the certificate's.
        certificate_nonce = credential_nonce(leaf)
        if certificate_nonce is None:
            raise AppleVerificationError(
                Reason.APPLE_NONCE_MISMATCH,
                "the credential certificate carries no nonce extension (1.2.840.113635.100.8.2)",
            )
        matches = [
            hmac.compare_digest(
                certificate_nonce, hashlib.sha256(auth_data.raw + client_hash).digest()
            )
            for client_hash in client_hashes
        ]
        if not any(matches):
            raise AppleVerificationError(
                Reason.APPLE_NONCE_MISMATCH,
                "the certificate nonce is not SHA-256(authData ‖ clientDataHash): "
                "was the attestation made for another challenge?",
            )

        # Step 5: the key id is SHA-256 of the credential certificate's public key point.
        try:
            public_key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise malformed(f"the credential certificate's key is unusable ({exc})") from exc
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise malformed("the credential certificate's key is not EC P-256")
        point = public_key_point(public_key)
        if not hmac.compare_digest(hashlib.sha256(point).digest(), expected_key_id):
            raise AppleVerificationError(
                Reason.APPLE_KEY_ID_MISMATCH,
                "the key id sent is not SHA-256 of the attested public key",
            )

        # Step 6: RP ID hash = SHA-256(TEAMID.bundleId).
        app_id = match_app_id(auth_data.rp_id_hash, self._app_ids)
        if app_id is None:
            raise AppleVerificationError(
                Reason.APPLE_APP_ID_MISMATCH,
                f"the RP ID hash {auth_data.rp_id_hash.hex()} is not SHA-256 of any accepted "
                f"app id ({', '.join(self.app_ids)})",
            )

        # Step 7: a fresh key has signed nothing.
        if auth_data.counter != 0:
            raise AppleVerificationError(
                Reason.APPLE_COUNTER_INVALID,
                f"attestation counter is {auth_data.counter}, expected 0",
            )

        # Step 8: the aaguid names the environment, compared in full (all 16 bytes).
        assert auth_data.aaguid is not None and auth_data.credential_id is not None
        if not hmac.compare_digest(auth_data.aaguid, self.environment.aaguid):
            found = Environment.from_aaguid(auth_data.aaguid)
            raise AppleVerificationError(
                Reason.APPLE_ENVIRONMENT_MISMATCH,
                f"expected a {self.environment} attestation, found "
                + (f"a {found} one" if found else f"aaguid {auth_data.aaguid.hex()}"),
            )

        # Step 9: the credential id is the key id.
        if not hmac.compare_digest(auth_data.credential_id, expected_key_id):
            raise AppleVerificationError(
                Reason.APPLE_CREDENTIAL_ID_MISMATCH,
                "the credential id in authData is not the key id",
            )

        return AttestedKey(
            key_id=expected_key_id,
            public_key=point,
            environment=self.environment,
            app_id=app_id,
            receipt=parsed.receipt,
            counter=0,
            certificate_chain=parsed.x5c,
            extensions=auth_data.extensions,
        )

    def verify_assertion(
        self,
        assertion: bytes | str,
        *,
        client_data: bytes | str,
        public_key: ec.EllipticCurvePublicKey | bytes | str,
        previous_counter: int,
        app_id: str | None = None,
    ) -> VerifiedAssertion:
        """Verify an assertion from an attested key; ``app_id`` narrows to the key's own app.

        An ``app_id`` this verifier does not accept matches nothing (``apple.app_id_mismatch``
        at the RP ID step): a store shared by several apps must not let one app's keys pass
        another app's verifier.
        """
        candidates = self._app_ids
        if app_id is not None:
            candidates = self._single_app.get(app_id, ())
        return check_assertion(
            assertion,
            client_data=client_data,
            public_key=public_key,
            previous_counter=previous_counter,
            app_ids=candidates,
        )


def verify_attestation(
    attestation: bytes | str,
    *,
    key_id: str | bytes,
    app_id: str | Sequence[str],
    challenge: str | bytes | None = None,
    client_data_hash: bytes | None = None,
    also_client_data_hash: bytes | None = None,
    environment: Environment | str = Environment.PRODUCTION,
    trust_roots: Sequence[x509.Certificate] | None = None,
    now: datetime,
) -> AttestedKey:
    """One-call form of ``AppAttestVerifier(...).verify_attestation(...)``."""
    verifier = AppAttestVerifier(app_id, environment=environment, trust_roots=trust_roots)
    return verifier.verify_attestation(
        attestation,
        key_id=key_id,
        challenge=challenge,
        client_data_hash=client_data_hash,
        also_client_data_hash=also_client_data_hash,
        now=now,
    )
