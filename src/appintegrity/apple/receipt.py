"""App Attest receipts: the CMS-signed statement in an attestation, renewed by receipt refresh.

A receipt names the app, the attested key's certificate and, once refreshed, the device's fraud-risk
metric. This module is pure: bytes in, a typed ``Receipt`` out, or an ``AppleVerificationError``.

Every receipt failure, including undecodable bytes, carries ``Reason.APPLE_RECEIPT_INVALID``: a
receipt is validated as a step of its own beside the attestation verdict, so one code is what
callers branch on; the message names the exact step that failed.

Apple's receipt validation ("Assessing fraud risk", steps 1-6): verify the CMS signature; chain
the signer to Apple Root CA - G3; parse the payload; check the app id (field 2); optionally check
that the creation time (field 12) is recent; check the attested key (field 3).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as ChainVerificationError,
)

from appintegrity.apple.certificates import CERTIFICATE_ERRORS, LinkCacheStats, VerifiedLinks
from appintegrity.apple.keys import load_public_key
from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import AppleVerificationError, Reason

__all__ = [
    "APPLE_ROOT_CA_G3_SHA256",
    "RECEIPT_SIGNER_MARKER_OID",
    "Receipt",
    "ReceiptType",
    "RiskAssessment",
    "apple_root_ca_g3",
    "assess_risk",
    "parse_receipt",
    "receipt_chain_stats",
    "verify_receipt",
]

APPLE_ROOT_CA_G3_SHA256 = bytes.fromhex(
    "63343abfb89a6a03ebb57e9b3f5fa7be7c4f5c756f3017b3a8c488c3653e9179"
)

# Apple marks its "Application Attestation Fraud Receipt Signing" certificates (every one from
# 2020 to 2026) with this extension. Apple Root CA - G3 also anchors certificates whose keys
# third parties hold (Apple Pay merchants, among others), so a chain to G3 alone does not prove
# Apple signed the receipt: the signer must carry this marker too.
RECEIPT_SIGNER_MARKER_OID = x509.ObjectIdentifier("1.2.840.113635.100.12.15")

_MAX_RECEIPT_BYTES = 64 * 1024

# Signer chains that passed step 2, keyed by the exact DER of the receipt's certificates and of
# the trust roots. Every receipt of a period is signed by the same certificate, so building and
# verifying its path (the costliest step) is done once; validity at `now` is rechecked per call.
_verified_chains = VerifiedLinks()


class ReceiptType(StrEnum):
    """Field 6: ``ATTEST`` for the receipt inside an attestation, ``RECEIPT`` once refreshed."""

    ATTEST = "ATTEST"
    RECEIPT = "RECEIPT"


@dataclass(frozen=True, slots=True)
class Receipt:
    """The decoded receipt payload, and what signed it.

    ``client_hash`` is field 4 byte for byte: the clientDataHash for ``ATTEST`` receipts; refreshed
    receipts carry Apple's own (mangled) copy of it. ``signer_chain`` holds the CMS certificates as
    DER, signer first.
    """

    app_id: str
    attested_certificate: bytes
    public_key: bytes
    client_hash: bytes
    token: str
    type: ReceiptType
    environment: str | None
    creation_time: datetime
    risk_metric: int | None
    not_before: datetime | None
    expiration_time: datetime
    signer_chain: tuple[bytes, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """The fraud-risk reading of one receipt.

    ``metric`` is Apple's count of attestations on this device over 30 days (``None`` in ``ATTEST``
    receipts, which precede any refresh). ``age`` is how old the receipt was at ``now``, when given.
    """

    metric: int | None
    threshold: int
    over_threshold: bool
    age: timedelta | None
    receipt_type: ReceiptType


# Payload: SET OF SEQUENCE { INTEGER type, INTEGER version, OCTET STRING value }.
class _PayloadField(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("type", core.Integer),
        ("version", core.Integer),
        ("value", core.OctetString),
    ]


class _Payload(core.SetOf):  # type: ignore[misc]
    _child_spec = _PayloadField


_APP_ID, _CERTIFICATE, _CLIENT_HASH, _TOKEN, _TYPE, _ENVIRONMENT = 2, 3, 4, 5, 6, 7
_CREATION_TIME, _RISK_METRIC, _NOT_BEFORE, _EXPIRATION_TIME = 12, 17, 19, 21
_REQUIRED_FIELDS = {
    _APP_ID: "app id",
    _CERTIFICATE: "attested certificate",
    _CLIENT_HASH: "client hash",
    _TOKEN: "token",
    _TYPE: "receipt type",
    _CREATION_TIME: "creation time",
    _EXPIRATION_TIME: "expiration time",
}

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_ECDSA_SIGNATURES = {
    "sha256_ecdsa": "sha256",
    "sha384_ecdsa": "sha384",
    "sha512_ecdsa": "sha512",
    "ecdsa": None,  # hash named by the digest algorithm
}


@dataclass(frozen=True, slots=True)
class _SignedReceipt:
    """A decoded receipt with the CMS parts its signature check needs."""

    receipt: Receipt
    content: bytes
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePublicKey
    others: tuple[x509.Certificate, ...]
    digest_name: str
    signature: bytes
    signed_attributes: bytes | None
    message_digest: bytes | None


def _invalid(message: str) -> AppleVerificationError:
    return AppleVerificationError(Reason.APPLE_RECEIPT_INVALID, message)


@cache
def apple_root_ca_g3() -> x509.Certificate:
    """Apple Root CA - G3, embedded in the package and checked against its pinned fingerprint."""
    pem = resources.files("appintegrity.apple").joinpath("roots/Apple_Root_CA_G3.pem").read_bytes()
    root = x509.load_pem_x509_certificate(pem)
    if not hmac.compare_digest(root.fingerprint(hashes.SHA256()), APPLE_ROOT_CA_G3_SHA256):
        raise RuntimeError("embedded Apple Root CA - G3 does not match its pinned SHA-256")
    return root


def receipt_chain_stats() -> LinkCacheStats:
    """How often ``verify_receipt`` reused a verified signer chain (hits) or built one (misses)."""
    return _verified_chains.stats


def parse_receipt(data: bytes | str) -> Receipt:
    """Decode a receipt (raw CMS bytes, or base64 text) without checking who signed it.

    For display and triage only: trust nothing in it before ``verify_receipt``.
    """
    return _decode(data).receipt


def verify_receipt(
    receipt: bytes | str,
    *,
    now: datetime,
    app_id: str | None = None,
    public_key: ec.EllipticCurvePublicKey | bytes | str | None = None,
    trust_roots: Sequence[x509.Certificate] | None = None,
    max_age: timedelta | None = None,
) -> Receipt:
    """Validate a receipt as Apple prescribes and return its payload.

    ``receipt`` is the raw CMS bytes, or base64 text. ``public_key`` is the attested key (an
    ``EllipticCurvePublicKey``, PEM, DER SubjectPublicKeyInfo, or the 65-byte point, raw or in
    base64). ``max_age`` enables Apple's step 5 (Apple recommends five minutes for a receipt just
    fetched from its server); leave it ``None`` for receipts validated later from storage.
    ``trust_roots`` replaces Apple Root CA - G3 (test CAs only).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expected_point = None if public_key is None else _expected_point(public_key)
    signed = _decode(receipt)

    # Step 1: the CMS signature, by the certificate the SignerInfo names.
    _verify_signature(signed)
    # Step 2: the signer chains to Apple Root CA - G3 at `now`, and is a receipt signer.
    roots = list(trust_roots) if trust_roots is not None else [apple_root_ca_g3()]
    _verify_chain(signed.signer, signed.others, roots, now, signed.receipt.signer_chain)

    parsed = signed.receipt
    # Step 4: the app id in field 2.
    if app_id is not None and not hmac.compare_digest(
        parsed.app_id.encode("utf-8"), app_id.encode("utf-8")
    ):
        raise _invalid(f"receipt names app id {parsed.app_id!r}, expected {app_id!r}")
    # Step 5: the creation time in field 12 is recent (opt-in).
    if max_age is not None:
        age = now - parsed.creation_time
        if age > max_age:
            raise _invalid(
                f"receipt was created at {parsed.creation_time.isoformat()}, "
                f"{age} before now; at most {max_age} allowed"
            )
    # Step 6: the attested key in field 3 is the one stored at attestation.
    if expected_point is not None and not hmac.compare_digest(parsed.public_key, expected_point):
        raise _invalid("the receipt's attested certificate holds a different public key")
    return parsed


def assess_risk(receipt: Receipt, *, threshold: int, now: datetime | None = None) -> RiskAssessment:
    """Read the fraud-risk metric against a threshold (a count of attestations over 30 days).

    Only a verified receipt should be assessed. An ``ATTEST`` receipt carries no metric and is
    never over the threshold: refresh it first.
    """
    metric = receipt.risk_metric
    age = None if now is None else now - receipt.creation_time
    return RiskAssessment(
        metric=metric,
        threshold=threshold,
        over_threshold=metric is not None and metric > threshold,
        age=age,
        receipt_type=receipt.type,
    )


# --- decoding -------------------------------------------------------------------------------


# asn1crypto parses lazily and reports malformed input as the last four; cryptography its own.
_CMS_ERRORS: tuple[type[Exception], ...] = (
    *CERTIFICATE_ERRORS,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
)


def _decode(data: bytes | str) -> _SignedReceipt:
    raw = _receipt_bytes(data)
    try:
        return _decode_cms(raw)
    except AppleVerificationError:
        raise
    except _CMS_ERRORS as exc:
        raise _invalid(f"receipt is not a well-formed CMS SignedData structure: {exc}") from exc


def _receipt_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        try:
            raw = b64decode_lenient(data)
        except EncodingError as exc:
            raise _invalid(f"receipt text is not base64: {exc}") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise _invalid(f"receipt must be bytes or base64 text, found {type(data).__name__}")
    if not raw:
        raise _invalid("receipt is empty")
    if len(raw) > _MAX_RECEIPT_BYTES:
        raise _invalid(f"receipt is {len(raw)} bytes; at most {_MAX_RECEIPT_BYTES} expected")
    return raw


def _decode_cms(raw: bytes) -> _SignedReceipt:
    content_info = cms.ContentInfo.load(raw, strict=True)
    if content_info["content_type"].native != "signed_data":
        raise _invalid(
            f"receipt is CMS {content_info['content_type'].native!r}, expected signed_data"
        )
    signed_data = content_info["content"]
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].native != "data":
        raise _invalid(
            f"receipt content type is {encapsulated['content_type'].native!r}, expected data"
        )
    content_value = encapsulated["content"]
    if not isinstance(content_value, core.OctetString) or content_value.native is None:
        raise _invalid("receipt carries no content (detached signature)")
    content: bytes = content_value.native

    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) != 1:
        raise _invalid(f"receipt has {len(signer_infos)} signers, expected exactly one")
    signer_info = signer_infos[0]

    certificates = _certificates(signed_data)
    signer = _find_signer(signer_info["sid"], certificates)
    others = tuple(cert for cert in certificates if cert is not signer)

    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _DIGESTS:
        raise _invalid(f"receipt digest algorithm {digest_name!r} is not supported")
    signature_name = signer_info["signature_algorithm"]["algorithm"].native
    if signature_name not in _ECDSA_SIGNATURES:
        raise _invalid(f"receipt signature algorithm {signature_name!r} is not ECDSA")
    named_hash = _ECDSA_SIGNATURES[signature_name]
    if named_hash is not None and named_hash != digest_name:
        raise _invalid(
            f"signature algorithm {signature_name} disagrees with digest algorithm {digest_name}"
        )

    signer_key = _public_key_of(signer, "receipt signer")
    signed_attributes, message_digest = _signed_attributes(signer_info)
    receipt = _parse_payload(content, raw, (signer, *others))
    return _SignedReceipt(
        receipt=receipt,
        content=content,
        signer=signer,
        signer_key=signer_key,
        others=others,
        digest_name=digest_name,
        signature=signer_info["signature"].native,
        signed_attributes=signed_attributes,
        message_digest=message_digest,
    )


def _certificates(signed_data: cms.SignedData) -> list[x509.Certificate]:
    choices = signed_data["certificates"]
    if not choices:
        raise _invalid("receipt carries no certificates")
    certificates = []
    for choice in choices:
        if choice.name != "certificate":
            raise _invalid(f"receipt carries a {choice.name!r}, expected X.509 certificates")
        certificates.append(_load_certificate(choice.chosen.dump(), "a receipt certificate"))
    return certificates


def _find_signer(
    sid: cms.SignerIdentifier, certificates: Sequence[x509.Certificate]
) -> x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        issuer_der = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        for cert in certificates:
            if cert.serial_number == serial and cert.issuer.public_bytes() == issuer_der:
                return cert
    else:
        key_id = sid.chosen.native
        for cert in certificates:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if hmac.compare_digest(ski.value.digest, key_id):
                return cert
    raise _invalid("the certificate named by the receipt's SignerInfo is not in the receipt")


def _signed_attributes(signer_info: cms.SignerInfo) -> tuple[bytes | None, bytes | None]:
    attributes = signer_info["signed_attrs"]
    if not attributes:
        return None, None
    content_types: list[object] = []
    digests: list[object] = []
    for attribute in attributes:
        name = attribute["type"].native
        values = attribute["values"]
        if name == "content_type":
            content_types.extend(value.native for value in values)
        elif name == "message_digest":
            digests.extend(value.native for value in values)
    # RFC 5652 §5.3: with signed attributes, content-type and message-digest are mandatory.
    if content_types != ["data"]:
        raise _invalid(f"signed content-type attribute is {content_types!r}, expected ['data']")
    if len(digests) != 1:
        raise _invalid(f"receipt has {len(digests)} message-digest attributes, expected one")
    # RFC 5652 §5.4: the signature covers the DER SET OF, not the [0] IMPLICIT encoding.
    encoded = attributes.dump()
    digest = digests[0]
    if not isinstance(digest, bytes):
        raise _invalid("the message-digest attribute is not an OCTET STRING")
    return b"\x31" + encoded[1:], digest


def _parse_payload(content: bytes, raw: bytes, chain: tuple[x509.Certificate, ...]) -> Receipt:
    payload = _Payload.load(content, strict=True)
    fields: dict[int, bytes] = {}
    for item in payload:
        field_type = item["type"].native
        value = item["value"].native
        if not isinstance(field_type, int) or not isinstance(value, bytes):
            raise _invalid("receipt payload field is not (INTEGER, INTEGER, OCTET STRING)")
        item["version"].native  # noqa: B018 - forces the lazy parse of the version INTEGER
        if field_type in fields:
            raise _invalid(f"receipt payload repeats field {field_type}")
        fields[field_type] = value
    missing = [name for number, name in _REQUIRED_FIELDS.items() if number not in fields]
    if missing:
        raise _invalid(f"receipt payload lacks {', '.join(missing)}")

    certificate_der = fields[_CERTIFICATE]
    attested_key = _public_key_of(
        _load_certificate(certificate_der, "the attested certificate"), "attested certificate"
    )
    type_text = _text(fields[_TYPE], "receipt type")
    try:
        receipt_type = ReceiptType(type_text)
    except ValueError:
        raise _invalid(f"receipt type is {type_text!r}, expected ATTEST or RECEIPT") from None
    risk_metric = None
    if _RISK_METRIC in fields:
        metric_text = _text(fields[_RISK_METRIC], "risk metric")
        if not metric_text.isascii() or not metric_text.isdigit() or len(metric_text) > 9:
            raise _invalid(f"risk metric is {metric_text!r}, expected a decimal count")
        risk_metric = int(metric_text)
    return Receipt(
        app_id=_text(fields[_APP_ID], "app id"),
        attested_certificate=certificate_der,
        public_key=attested_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        client_hash=fields[_CLIENT_HASH],
        token=_text(fields[_TOKEN], "token"),
        type=receipt_type,
        environment=_text(fields[_ENVIRONMENT], "environment") if _ENVIRONMENT in fields else None,
        creation_time=_time(fields[_CREATION_TIME], "creation time"),
        risk_metric=risk_metric,
        not_before=_time(fields[_NOT_BEFORE], "not before") if _NOT_BEFORE in fields else None,
        expiration_time=_time(fields[_EXPIRATION_TIME], "expiration time"),
        signer_chain=tuple(cert.public_bytes(serialization.Encoding.DER) for cert in chain),
        raw=raw,
    )


def _load_certificate(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise _invalid(f"{what} is not a well-formed X.509 certificate: {exc}") from None


def _public_key_of(certificate: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    # cryptography decodes a certificate's key lazily: a damaged key surfaces only here.
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _invalid(f"the {what}'s public key is unusable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _invalid(f"the {what} does not hold an EC public key")
    return key


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(f"receipt {name} is not UTF-8 text") from None


def _time(value: bytes, name: str) -> datetime:
    text = _text(value, name)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"receipt {name} {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise _invalid(f"receipt {name} {text!r} has no time zone")
    return parsed.astimezone(UTC)


# --- verification ---------------------------------------------------------------------------


def _verify_signature(signed: _SignedReceipt) -> None:
    key = signed.signer_key
    digest = _DIGESTS[signed.digest_name]()
    if signed.signed_attributes is None:
        # No signed attributes: the signature covers the content itself.
        data = signed.content
    else:
        assert signed.message_digest is not None
        hasher = hashes.Hash(_DIGESTS[signed.digest_name]())
        hasher.update(signed.content)
        if not hmac.compare_digest(hasher.finalize(), signed.message_digest):
            raise _invalid("the signed message-digest attribute does not match the content")
        data = signed.signed_attributes
    try:
        key.verify(signed.signature, data, ec.ECDSA(digest))
    except InvalidSignature:
        # Apple's 2020 receipts carry signed attributes yet sign the content itself (RFC 5652
        # says the attributes). The content, whose digest the attributes name (checked
        # above), is what every field is read from, so a signature over it is accepted too.
        if data is signed.content or not _verifies(key, signed.signature, signed.content, digest):
            raise _invalid("the receipt's CMS signature does not verify with its signer") from None


def _verifies(
    key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, digest: hashes.HashAlgorithm
) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(digest))
    except InvalidSignature:
        return False
    return True


def _verify_chain(
    signer: x509.Certificate,
    others: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
    chain_der: tuple[bytes, ...],
) -> None:
    if not roots:
        raise ValueError("trust_roots must not be empty")
    # A chain verified before passes again if every certificate offered (and every root) is
    # valid at `now`: nothing else in path validation depends on time. Otherwise verify in full,
    # which finds another path if there is one and names the failure.
    key = (chain_der, tuple(root.public_bytes(serialization.Encoding.DER) for root in roots))
    if _valid_at((signer, *others, *roots), now) and _verified_chains.seen(key):
        return
    _verify_chain_in_full(signer, others, roots, now)
    _verified_chains.add(key)


def _valid_at(certificates: Sequence[x509.Certificate], now: datetime) -> bool:
    return all(
        cert.not_valid_before_utc <= now <= cert.not_valid_after_utc for cert in certificates
    )


def _verify_chain_in_full(
    signer: x509.Certificate,
    others: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    builder = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now.astimezone(UTC).replace(tzinfo=None))
        .max_chain_depth(4)
        # Web PKI rules for the CAs; the signer is no TLS client, so its extensions are checked
        # below instead (Apple's signers carry no subjectAltName or extendedKeyUsage).
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
    )
    try:
        builder.build_client_verifier().verify(signer, list(others))
    except ChainVerificationError as exc:
        raise _invalid(
            f"the receipt signer does not chain to a trusted root at {now.isoformat()}: {exc}"
        ) from None
    except CERTIFICATE_ERRORS as exc:
        raise _invalid(f"the receipt chain cannot be evaluated: {exc}") from None
    try:
        signer.extensions.get_extension_for_oid(RECEIPT_SIGNER_MARKER_OID)
    except x509.ExtensionNotFound:
        raise _invalid(
            f"the receipt signer {signer.subject.rfc4514_string()} is not an App Attest "
            f"receipt signer (no extension {RECEIPT_SIGNER_MARKER_OID.dotted_string})"
        ) from None
    except CERTIFICATE_ERRORS as exc:
        raise _invalid(f"the receipt signer's extensions are undecodable: {exc}") from None
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.digital_signature:
        raise _invalid("the receipt signer's key usage does not allow digital signatures")


def _expected_point(public_key: ec.EllipticCurvePublicKey | bytes | str) -> bytes:
    """The 65-byte uncompressed point of the expected key, however the caller spelled it; a
    key that is not a P-256 key in any accepted spelling is ``apple.malformed``, as for
    assertions."""
    return _point(load_public_key(public_key))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
