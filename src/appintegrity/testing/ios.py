"""A software iPhone for testing App Attest backends without a phone (public API).

``AppAttestCA`` is a throwaway CA shaped like Apple's (P-384 root → P-384 intermediate →
P-256 credential certificate carrying the nonce extension); ``SoftwareIPhone`` plays
``DCAppAttestService``: ``generate_key``, ``attest_key``, ``generate_assertion``. One defect at
a time can be switched on, per call (``defect=``) or per phone (``with_defect``), to check that
a backend refuses each broken input with the right reason::

    ca = AppAttestCA.generate()
    phone = SoftwareIPhone("TEAMID.com.example.app", ca=ca)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, challenge)
    verifier = AppAttestVerifier("TEAMID.com.example.app", trust_roots=[ca.root_certificate])
    verifier.verify_attestation(attestation, key_id=key_id, challenge=challenge, now=now)

Never trust this CA outside tests: its private keys live in memory, unprotected.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from appintegrity.apple.attestation import AAGUIDS, FORMAT, NONCE_EXTENSION_OID, Environment
from appintegrity.encoding import normalize_key_id
from appintegrity.testing._certificates import (
    ca_key_usage,
    certificate_builder,
    signing_key_usage,
)

__all__ = ["AppAttestCA", "Defect", "ReceiptFactory", "SoftwareIPhone"]

ReceiptFactory = Callable[[str, bytes, bytes], bytes]
"""``(app_id, credential certificate DER, clientDataHash) -> receipt bytes``."""

_FLAGS = 0x40  # what real devices set, in attestations and assertions alike
_WRONG_APP_ID = "0000000000.org.example.not-this-app"
_IOS27_EXTENSIONS = {
    "apple_bundle_version_01": "1",
    "apple_validation_category_01": (1).to_bytes(4, "little"),
}


class Defect(StrEnum):
    """One thing wrong with an attestation or assertion, and the reason a verifier reports.

    Defects that do not concern the object being made are ignored (a phone with
    ``BAD_SIGNATURE`` still attests its keys correctly).
    """

    # Attestations
    WRONG_FORMAT = "wrong_format"  # apple.unsupported_format
    EXPIRED_LEAF = "expired_leaf"  # apple.certificate_chain_invalid
    UNTRUSTED_CHAIN = "untrusted_chain"  # apple.certificate_chain_invalid (look-alike CA)
    FORGED_LEAF = "forged_leaf"  # apple.certificate_chain_invalid (genuine intermediate)
    WRONG_NONCE = "wrong_nonce"  # apple.nonce_mismatch
    MISSING_NONCE = "missing_nonce"  # apple.nonce_mismatch
    WRONG_KEY_ID = "wrong_key_id"  # apple.key_id_mismatch
    NONZERO_COUNTER = "nonzero_counter"  # apple.counter_invalid
    WRONG_ENVIRONMENT = "wrong_environment"  # apple.environment_mismatch (the other aaguid)
    WRONG_AAGUID = "wrong_aaguid"  # apple.environment_mismatch ("appattest" + junk)
    WRONG_CREDENTIAL_ID = "wrong_credential_id"  # apple.credential_id_mismatch
    # Assertions
    BAD_SIGNATURE = "bad_signature"  # apple.signature_invalid
    REPLAYED_COUNTER = "replayed_counter"  # apple.counter_invalid
    # Both
    WRONG_RP_ID = "wrong_rp_id"  # apple.app_id_mismatch
    TRUNCATED_AUTH_DATA = "truncated_auth_data"  # apple.malformed
    IOS27_EXTENSIONS = "ios27_extensions"  # not a defect: iOS 27's extension map, must pass


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appintegrity test kit"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "California"),
        ]
    )


_ROOT_NAME = _name("Test App Attestation Root CA")
_INTERMEDIATE_NAME = _name("Test App Attestation CA 1")


def _ca_extensions(
    builder: x509.CertificateBuilder, path_length: int | None
) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    ).add_extension(ca_key_usage(), critical=True)


def nonce_extension_value(nonce: bytes) -> bytes:
    """DER of ``SEQUENCE { [1] EXPLICIT OCTET STRING nonce }`` (short lengths only)."""
    if len(nonce) > 100:
        raise ValueError("nonce too long for this encoder")
    octets = b"\x04" + bytes([len(nonce)]) + nonce
    explicit = b"\xa1" + bytes([len(octets)]) + octets
    return b"\x30" + bytes([len(explicit)]) + explicit


@dataclass(frozen=True)
class AppAttestCA:
    """A throwaway CA shaped like Apple's App Attestation CA (P-384 root and intermediate)."""

    root_key: ec.EllipticCurvePrivateKey
    root_certificate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate_certificate: x509.Certificate

    @classmethod
    def generate(cls, *, now: datetime | None = None) -> AppAttestCA:
        """A new root and intermediate, valid from a year before ``now`` for ten years."""
        now = now or datetime.now(UTC)
        root_key = ec.generate_private_key(ec.SECP384R1())
        intermediate_key = ec.generate_private_key(ec.SECP384R1())
        not_before, not_after = now - timedelta(days=365), now + timedelta(days=3650)
        root = _ca_extensions(
            certificate_builder(
                _ROOT_NAME, _ROOT_NAME, root_key.public_key(), not_before, not_after
            ),
            None,
        ).sign(root_key, hashes.SHA384())
        intermediate = _ca_extensions(
            certificate_builder(
                _INTERMEDIATE_NAME, _ROOT_NAME, intermediate_key.public_key(), not_before, not_after
            ),
            0,
        ).sign(root_key, hashes.SHA384())
        return cls(root_key, root, intermediate_key, intermediate)

    @property
    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(Encoding.PEM)

    @property
    def intermediate_der(self) -> bytes:
        return self.intermediate_certificate.public_bytes(Encoding.DER)

    @property
    def trust_roots(self) -> list[x509.Certificate]:
        """What to pass as ``trust_roots`` to a verifier that should trust this CA."""
        return [self.root_certificate]

    def issue_credential_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        nonce: bytes | None,
        *,
        not_before: datetime,
        not_after: datetime,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> x509.Certificate:
        """A leaf like Apple's: subject = hex key id, nonce in 1.2.840.113635.100.8.2.

        ``signing_key`` other than the intermediate's forges the leaf (for negative tests).
        """
        point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        builder = (
            certificate_builder(
                _name(hashlib.sha256(point).hexdigest()),
                self.intermediate_certificate.subject,
                public_key,
                not_before,
                not_after,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(signing_key_usage(), critical=True)
        )
        if nonce is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(NONCE_EXTENSION_OID, nonce_extension_value(nonce)),
                critical=False,
            )
        return builder.sign(signing_key or self.intermediate_key, hashes.SHA256())


@dataclass
class _Key:
    private_key: ec.EllipticCurvePrivateKey
    point: bytes
    counter: int = 0


@dataclass
class _Keychain:
    """State shared by a phone and its ``with_defect`` views: keys and counters."""

    keys: dict[bytes, _Key] = field(default_factory=dict)
    look_alike_ca: AppAttestCA | None = None


class SoftwareIPhone:
    """A software ``DCAppAttestService`` for one app, attesting under ``ca``."""

    def __init__(
        self,
        app_id: str,
        *,
        ca: AppAttestCA,
        environment: Environment | str = Environment.PRODUCTION,
        receipt_factory: ReceiptFactory | None = None,
        defect: Defect | None = None,
    ) -> None:
        self.app_id = app_id
        self.ca = ca
        self.environment = Environment(environment)
        self.receipt_factory = receipt_factory
        self.defect = Defect(defect) if defect is not None else None
        self._keychain = _Keychain()

    def with_defect(self, defect: Defect | str | None) -> SoftwareIPhone:
        """The same phone (same keys, same counters) that makes everything with ``defect``."""
        view = copy.copy(self)
        view.defect = Defect(defect) if defect is not None else None
        return view

    # DCAppAttestService.generateKey
    def generate_key(self) -> str:
        """Make a new P-256 key; return its key id (standard base64 of SHA-256 of the point)."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        point = private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        key_id = hashlib.sha256(point).digest()
        self._keychain.keys[key_id] = _Key(private_key, point)
        return base64.b64encode(key_id).decode("ascii")

    def public_key(self, key_id: str | bytes) -> bytes:
        """The key's uncompressed P-256 point (65 bytes)."""
        return self._key(key_id)[1].point

    def counter(self, key_id: str | bytes) -> int:
        """The key's assertion counter: how many assertions it has made."""
        return self._key(key_id)[1].counter

    def _key(self, key_id: str | bytes) -> tuple[bytes, _Key]:
        raw = normalize_key_id(key_id)
        try:
            return raw, self._keychain.keys[raw]
        except KeyError:
            raise KeyError(f"this phone has no key {key_id!r}") from None

    def _defect(self, defect: Defect | str | None) -> Defect | None:
        return Defect(defect) if defect is not None else self.defect

    def _rp_id_hash(self, defect: Defect | None) -> bytes:
        app_id = _WRONG_APP_ID if defect is Defect.WRONG_RP_ID else self.app_id
        return hashlib.sha256(app_id.encode("utf-8")).digest()

    # DCAppAttestService.attestKey
    def attest_key(
        self,
        key_id: str | bytes,
        challenge: str | bytes | None = None,
        *,
        client_data_hash: bytes | None = None,
        now: datetime | None = None,
        defect: Defect | str | None = None,
    ) -> bytes:
        """The CBOR attestation object for ``key_id`` over SHA-256(``challenge``).

        Pass ``client_data_hash`` instead to attest a hash the app computed itself.
        """
        if (challenge is None) == (client_data_hash is None):
            raise ValueError("pass exactly one of challenge and client_data_hash")
        if client_data_hash is None:
            data = challenge.encode("utf-8") if isinstance(challenge, str) else challenge
            assert data is not None
            client_data_hash = hashlib.sha256(data).digest()
        active = self._defect(defect)
        now = now or datetime.now(UTC)
        raw_key_id, key = self._key(key_id)

        aaguid = AAGUIDS[self.environment]
        if active is Defect.WRONG_ENVIRONMENT:
            other = (
                Environment.DEVELOPMENT
                if self.environment is Environment.PRODUCTION
                else Environment.PRODUCTION
            )
            aaguid = AAGUIDS[other]
        elif active is Defect.WRONG_AAGUID:
            aaguid = AAGUIDS[self.environment][:9] + b"-tampered"[:7]
        credential_id = raw_key_id
        if active is Defect.WRONG_CREDENTIAL_ID:
            credential_id = hashlib.sha256(b"another key" + raw_key_id).digest()
        x = key.point[1:33]
        y = key.point[33:]
        cose_key = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})
        auth_data = (
            self._rp_id_hash(active)
            + bytes([_FLAGS])
            + (1 if active is Defect.NONZERO_COUNTER else 0).to_bytes(4, "big")
            + aaguid
            + len(credential_id).to_bytes(2, "big")
            + credential_id
            + cose_key
        )
        if active is Defect.IOS27_EXTENSIONS:
            auth_data += cbor2.dumps(_IOS27_EXTENSIONS)

        nonce: bytes | None = hashlib.sha256(auth_data + client_data_hash).digest()
        if active is Defect.WRONG_NONCE:
            nonce = hashlib.sha256(b"another challenge" + client_data_hash).digest()
        elif active is Defect.MISSING_NONCE:
            nonce = None
        certified_key = key.private_key.public_key()
        if active is Defect.WRONG_KEY_ID:
            certified_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        not_before, not_after = now - timedelta(days=1), now + timedelta(days=60)
        if active is Defect.EXPIRED_LEAF:
            not_before, not_after = now - timedelta(days=90), now - timedelta(minutes=1)
        ca = self.ca
        if active is Defect.UNTRUSTED_CHAIN:
            # Same names as the trusted CA, different keys: only signatures tell them apart.
            if self._keychain.look_alike_ca is None:
                self._keychain.look_alike_ca = AppAttestCA.generate(
                    now=self.ca.root_certificate.not_valid_before_utc + timedelta(days=365)
                )
            ca = self._keychain.look_alike_ca
        signing_key = None
        if active is Defect.FORGED_LEAF:
            signing_key = ec.generate_private_key(ec.SECP384R1())
        leaf = ca.issue_credential_certificate(
            certified_key,
            nonce,
            not_before=not_before,
            not_after=not_after,
            signing_key=signing_key,
        )
        leaf_der = leaf.public_bytes(Encoding.DER)
        receipt = b""
        if self.receipt_factory is not None:
            receipt = self.receipt_factory(self.app_id, leaf_der, client_data_hash)
        if active is Defect.TRUNCATED_AUTH_DATA:
            auth_data = auth_data[: len(auth_data) - 20]
        return cbor2.dumps(
            {
                "fmt": "android-key" if active is Defect.WRONG_FORMAT else FORMAT,
                "attStmt": {"x5c": [leaf_der, ca.intermediate_der], "receipt": receipt},
                "authData": auth_data,
            }
        )

    # DCAppAttestService.generateAssertion
    def generate_assertion(
        self,
        key_id: str | bytes,
        client_data: str | bytes,
        *,
        defect: Defect | str | None = None,
    ) -> bytes:
        """The CBOR assertion over SHA-256(``client_data``); the key's counter goes up by one."""
        active = self._defect(defect)
        _, key = self._key(key_id)
        if active is not Defect.REPLAYED_COUNTER:
            key.counter += 1
        data = client_data.encode("utf-8") if isinstance(client_data, str) else client_data
        auth_data = self._rp_id_hash(active) + bytes([_FLAGS]) + key.counter.to_bytes(4, "big")
        if active is Defect.IOS27_EXTENSIONS:
            auth_data += cbor2.dumps(_IOS27_EXTENSIONS)
        nonce = hashlib.sha256(auth_data + hashlib.sha256(data).digest()).digest()
        signer = key.private_key
        if active is Defect.BAD_SIGNATURE:
            signer = ec.generate_private_key(ec.SECP256R1())
        signature = signer.sign(nonce, ec.ECDSA(hashes.SHA256()))
        if active is Defect.TRUNCATED_AUTH_DATA:
            auth_data = auth_data[:30]
        return cbor2.dumps({"signature": signature, "authenticatorData": auth_data})
