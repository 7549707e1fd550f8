"""App Attest receipts under a throwaway CA shaped like Apple's (public test kit).

``ReceiptAuthority`` plays Apple's receipt signer: a P-384 "Test Root CA - G3", a P-256
"Test Application Integration CA 5 - G1" and a P-256 "Test Application Attestation Fraud Receipt
Signing" certificate carrying Apple's receipt-signer marker extension. Its receipts are encoded
as Apple encodes them (BER, indefinite lengths, the content in 1000-byte chunks), so they exercise
the same parsing paths as real ones. Pass ``authority.root_certificate`` as ``trust_roots``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appintegrity.apple.receipt import RECEIPT_SIGNER_MARKER_OID, ReceiptType
from appintegrity.testing._certificates import (
    ca_key_usage,
    certificate_builder,
    signing_key_usage,
)

__all__ = ["ReceiptAuthority", "ReceiptDefect", "apple_time", "encode_payload"]

_INTEGRATION_CA_MARKER_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.3")
_ASN1_NULL = b"\x05\x00"
_CHUNK = 1000
_RECEIPT_LIFETIME = timedelta(days=90)
_REFRESH_DELAY = timedelta(days=1)


class ReceiptDefect(StrEnum):
    """One thing to get wrong on purpose, so a test can watch the verifier refuse it."""

    SIGNATURE = "signature"  # the CMS signature is over other bytes
    MESSAGE_DIGEST = "message_digest"  # signed attributes whose message-digest is wrong
    UNMARKED_SIGNER = "unmarked_signer"  # signed by a CA-issued certificate lacking the marker
    NO_INTERMEDIATE = "no_intermediate"  # the intermediate certificate is left out


def apple_time(value: datetime) -> str:
    """A time as Apple writes it in receipts: ``2020-11-21T22:16:05.466Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _name(common_name: str, unit: bool = True) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit:
        attributes.append(
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Test Certification Authority")
        )
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appintegrity test kit"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ]
    return x509.Name(attributes)


class ReceiptAuthority:
    """A receipt signer with its own three-certificate chain.

    ``not_before`` / ``not_after`` bound the CA certificates; ``signer_not_before`` /
    ``signer_not_after`` bound the signer (default: the same), so a test can expire it.
    ``clock`` dates the receipts ``attestation_receipt`` makes (default: the real clock).
    """

    def __init__(
        self,
        *,
        not_before: datetime = datetime(2020, 1, 1, tzinfo=UTC),
        not_after: datetime = datetime(2045, 1, 1, tzinfo=UTC),
        signer_not_before: datetime | None = None,
        signer_not_after: datetime | None = None,
        environment: str | None = "production",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.environment = environment
        self._clock = clock or (lambda: datetime.now(UTC))
        self._root_key = ec.generate_private_key(ec.SECP384R1())
        self._intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self._signer_key = ec.generate_private_key(ec.SECP256R1())

        root_name = _name("Test Root CA - G3")
        root_public = self._root_key.public_key()
        self.root_certificate = (
            certificate_builder(root_name, root_name, root_public, not_before, not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_public), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(ca_key_usage(), True)
            .sign(self._root_key, hashes.SHA384())
        )
        intermediate_public = self._intermediate_key.public_key()
        self.intermediate_certificate = (
            certificate_builder(
                _name("Test Application Integration CA 5 - G1"),
                root_name,
                intermediate_public,
                not_before,
                not_after,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .add_extension(_authority_key_id(root_public), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(intermediate_public), False)
            .add_extension(ca_key_usage(), True)
            .add_extension(
                x509.UnrecognizedExtension(_INTEGRATION_CA_MARKER_OID, _ASN1_NULL), False
            )
            .sign(self._root_key, hashes.SHA384())
        )
        self.signer_certificate = self._signer_certificate(
            self._signer_key,
            signer_not_before or not_before,
            signer_not_after or not_after,
            marked=True,
        )

    @property
    def root_pem(self) -> str:
        """The root in PEM, as the vectors' ``trust_roots_pem`` takes it."""
        return self.root_certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def issue(
        self,
        *,
        app_id: str,
        attested_certificate_der: bytes,
        client_hash: bytes,
        creation_time: datetime,
        token: str | None = None,
        type: ReceiptType = ReceiptType.ATTEST,  # Apple calls field 6 the receipt type
        risk_metric: int | None = None,
        environment: str | None = None,
        not_before: datetime | None = None,
        expiration_time: datetime | None = None,
        signed_attributes: bool = False,
        defect: ReceiptDefect | None = None,
    ) -> bytes:
        """A receipt as Apple shapes it: CMS SignedData over the payload SET, signed by the signer.

        ``token`` defaults to a fresh random one; ``expiration_time`` to 90 days after creation.
        ``signed_attributes`` signs content-type, signing-time and message-digest attributes
        instead of the content itself (both forms exist in the wild).
        """
        fields: list[tuple[int, bytes]] = []
        # Apple lists a refreshed receipt's fields in this order, an attestation's by number.
        if risk_metric is not None:
            fields.append((17, str(risk_metric).encode("ascii")))
        fields.append((6, type.value.encode("ascii")))
        fields += [
            (2, app_id.encode("utf-8")),
            (3, attested_certificate_der),
            (4, client_hash),
            (5, (token or self.new_token()).encode("utf-8")),
        ]
        if environment is not None:
            fields.append((7, environment.encode("utf-8")))
        fields.append((12, apple_time(creation_time).encode("ascii")))
        if not_before is not None:
            fields.append((19, apple_time(not_before).encode("ascii")))
        fields.append(
            (21, apple_time(expiration_time or creation_time + _RECEIPT_LIFETIME).encode("ascii"))
        )
        if type is ReceiptType.ATTEST:
            fields.sort(key=lambda field: field[0])
        payload = encode_payload(fields)
        return self.sign_payload(
            payload, signing_time=creation_time, signed_attributes=signed_attributes, defect=defect
        )

    def attestation_receipt(
        self, app_id: str, certificate_der: bytes, client_data_hash: bytes
    ) -> bytes:
        """The ``ATTEST`` receipt a software iPhone embeds in its attestation statement.

        Matches ``SoftwareIPhone``'s ``receipt_factory(app_id, certificate_der, clientDataHash)``.
        """
        return self.issue(
            app_id=app_id,
            attested_certificate_der=certificate_der,
            client_hash=client_data_hash,
            environment=self.environment,
            creation_time=self._clock(),
        )

    @staticmethod
    def new_token() -> str:
        """An opaque per-key token like Apple's (base64 of 64 random bytes)."""
        return base64.b64encode(os.urandom(64)).decode("ascii")

    def _signer_certificate(
        self,
        key: ec.EllipticCurvePrivateKey,
        not_before: datetime,
        not_after: datetime,
        *,
        marked: bool,
    ) -> x509.Certificate:
        public = key.public_key()
        builder = (
            certificate_builder(
                _name("Test Application Attestation Fraud Receipt Signing", unit=False),
                self.intermediate_certificate.subject,
                public,
                not_before,
                not_after,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_authority_key_id(self._intermediate_key.public_key()), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
            .add_extension(signing_key_usage(), True)
        )
        if marked:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(RECEIPT_SIGNER_MARKER_OID, _ASN1_NULL), False
            )
        return builder.sign(self._intermediate_key, hashes.SHA256())

    def sign_payload(
        self,
        payload: bytes,
        *,
        signing_time: datetime | None = None,
        signed_attributes: bool = False,
        defect: ReceiptDefect | None = None,
    ) -> bytes:
        """Wrap arbitrary payload bytes in a receipt's CMS envelope, properly signed.

        For tests of payload parsing: a signed receipt whose content is malformed.
        """
        signing_time = signing_time or self._clock()
        signer_key = self._signer_key
        signer = self.signer_certificate
        if defect is ReceiptDefect.UNMARKED_SIGNER:
            signer_key = ec.generate_private_key(ec.SECP256R1())
            signer = self._signer_certificate(
                signer_key, signer.not_valid_before_utc, signer.not_valid_after_utc, marked=False
            )
        attributes = None
        to_sign = payload
        if signed_attributes or defect is ReceiptDefect.MESSAGE_DIGEST:
            digest = hashes.Hash(hashes.SHA256())
            digest.update(payload + (b"!" if defect is ReceiptDefect.MESSAGE_DIGEST else b""))
            attributes = cms.CMSAttributes(
                [
                    {"type": "content_type", "values": ["data"]},
                    {
                        "type": "signing_time",
                        "values": [cms.Time({"utc_time": signing_time.astimezone(UTC)})],
                    },
                    {"type": "message_digest", "values": [digest.finalize()]},
                ]
            )
            to_sign = attributes.dump()  # RFC 5652 §5.4: the DER SET OF is what is signed
        if defect is ReceiptDefect.SIGNATURE:
            to_sign += b"tampered"
        signature = signer_key.sign(to_sign, ec.ECDSA(hashes.SHA256()))

        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {
                        "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                            {
                                "issuer": asn1_x509.Name.load(signer.issuer.public_bytes()),
                                "serial_number": signer.serial_number,
                            }
                        )
                    }
                ),
                "digest_algorithm": {"algorithm": "sha256", "parameters": core.Null()},
                "signed_attrs": attributes,
                "signature_algorithm": {"algorithm": "sha256_ecdsa"},
                "signature": signature,
            }
        )
        chain = [signer, self.intermediate_certificate, self.root_certificate]
        if defect is ReceiptDefect.NO_INTERMEDIATE:
            chain.remove(self.intermediate_certificate)
        certificates = b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in chain)
        digest_algorithms = _der(
            0x31, cms.DigestAlgorithm({"algorithm": "sha256", "parameters": core.Null()}).dump()
        )
        chunks = b"".join(
            _der(0x04, payload[start : start + _CHUNK]) for start in range(0, len(payload), _CHUNK)
        )
        encapsulated = _ber(
            0x30, _oid("1.2.840.113549.1.7.1"), _ber(0xA0, _ber(0x24, chunks))
        )  # id-data, [0] EXPLICIT constructed OCTET STRING
        signed_data = _ber(
            0x30,
            _der(0x02, b"\x01"),
            digest_algorithms,
            encapsulated,
            _ber(0xA0, certificates),
            _der(0x31, signer_info.dump()),
        )
        return _ber(0x30, _oid("1.2.840.113549.1.7.2"), _ber(0xA0, signed_data))


def _authority_key_id(issuer_key: ec.EllipticCurvePublicKey) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key)


def encode_payload(fields: Sequence[tuple[int, bytes]]) -> bytes:
    """A receipt payload: SET OF SEQUENCE { INTEGER type, INTEGER version 1, OCTET STRING value }.

    Fields are written in the order given (Apple's order is not DER's sorted order).
    """
    return _der(
        0x31,
        b"".join(
            _der(
                0x30,
                core.Integer(number).dump()
                + core.Integer(1).dump()
                + core.OctetString(value).dump(),
            )
            for number, value in fields
        ),
    )


def _oid(dotted: str) -> bytes:
    encoded: bytes = core.ObjectIdentifier(dotted).dump()
    return encoded


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        header = bytes([tag, length])
    else:
        size = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([tag, 0x80 | len(size)]) + size
    return header + content


def _ber(tag: int, *parts: bytes) -> bytes:
    """An indefinite-length encoding, closed by end-of-contents octets, as Apple emits."""
    return bytes([tag, 0x80]) + b"".join(parts) + b"\x00\x00"
