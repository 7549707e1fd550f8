"""Certificates cryptography cannot fully decode (a duplicated extension, a subjectAltName of a
name type it does not support) end in the typed error, in attestations and in receipts.

cryptography raises ``DuplicateExtension`` and ``UnsupportedGeneralNameType`` for these when the
extensions are first read; neither is a ValueError, and both once escaped as a traceback (a 500
from the service). Each certificate here is built with asn1crypto, which does not refuse them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple import verify_attestation
from appintegrity.apple.receipt import parse_receipt, verify_receipt
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
APP_ID = "ABCDE12345.com.example.app"
SUBJECT_ALT_NAME = "2.5.29.17"
VECTORS = Path(os.environ["APPINTEGRITY_SHARED_VECTORS"]) / "appattest"

Mutation = Callable[[asn1_x509.TbsCertificate], None]


def _duplicate_first_extension(tbs: asn1_x509.TbsCertificate) -> None:
    extensions = list(tbs["extensions"])
    tbs["extensions"] = asn1_x509.Extensions(
        [*extensions, asn1_x509.Extension.load(extensions[0].dump())]
    )


def _x400_subject_alt_name(tbs: asn1_x509.TbsCertificate) -> None:
    # GeneralNames holding one x400Address ([3], an empty ORAddress): valid DER, a name
    # type cryptography does not support.
    extension = asn1_x509.Extension(
        {
            "extn_id": SUBJECT_ALT_NAME,
            "critical": False,
            "extn_value": asn1_x509.ParsableOctetString(b"\x30\x04\xa3\x02\x30\x00"),
        }
    )
    tbs["extensions"] = asn1_x509.Extensions([*tbs["extensions"], extension])


def _resign(der: bytes, mutate: Mutation, key: ec.EllipticCurvePrivateKey) -> bytes:
    certificate = asn1_x509.Certificate.load(der)
    tbs = certificate["tbs_certificate"]
    mutate(tbs)
    tbs_der = tbs.dump(force=True)
    return asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": certificate["signature_algorithm"],
            "signature_value": key.sign(tbs_der, ec.ECDSA(hashes.SHA256())),
        }
    ).dump(force=True)


@pytest.fixture(scope="module")
def ca() -> AppAttestCA:
    return AppAttestCA.generate(now=NOW)


def _attestation_with(
    ca: AppAttestCA, index: int, mutate: Mutation, signer: str
) -> tuple[bytes, str]:
    phone = SoftwareIPhone(APP_ID, ca=ca)
    key_id = phone.generate_key()
    document = cbor2.loads(phone.attest_key(key_id, "challenge", now=NOW))
    x5c = document["attStmt"]["x5c"]
    key = ca.intermediate_key if signer == "ca" else ec.generate_private_key(ec.SECP384R1())
    x5c[index] = _resign(x5c[index], mutate, key)
    return cbor2.dumps(document), key_id


@pytest.mark.parametrize(
    ("index", "mutate", "signer"),
    [
        (0, _duplicate_first_extension, "ca"),  # signed by the real intermediate
        (0, _duplicate_first_extension, "forger"),  # forged: refused before its signature
        (0, _x400_subject_alt_name, "ca"),
        (0, _x400_subject_alt_name, "forger"),
        (1, _duplicate_first_extension, "forger"),  # the intermediate itself
        (1, _x400_subject_alt_name, "forger"),
    ],
    ids=[
        "leaf-dup-signed",
        "leaf-dup-forged",
        "leaf-x400-signed",
        "leaf-x400-forged",
        "intermediate-dup",
        "intermediate-x400",
    ],
)
def test_undecodable_certificate_extensions_are_a_chain_failure(
    ca: AppAttestCA, index: int, mutate: Mutation, signer: str
) -> None:
    attestation, key_id = _attestation_with(ca, index, mutate, signer)
    with pytest.raises(AppleVerificationError) as caught:
        verify_attestation(
            attestation,
            key_id=key_id,
            app_id=APP_ID,
            challenge="challenge",
            trust_roots=ca.trust_roots,
            now=NOW,
        )
    assert caught.value.reason == Reason.APPLE_CERTIFICATE_CHAIN_INVALID


def _real_receipt() -> tuple[bytes, dict[str, object]]:
    vector = json.loads((VECTORS / "apple-docs-2024-sample-prod-receipt.json").read_text())
    inputs = vector["input"]
    return base64.b64decode(inputs["receipt"]), vector


def _receipt_with_bad_bag_certificate(named_by_key_id: bool) -> bytes:
    """A real receipt plus a bag certificate with a duplicated extension; with
    ``named_by_key_id`` its SignerInfo names the signer by key identifier, so every bag
    certificate's extensions are read to find it."""
    receipt, _ = _real_receipt()
    content = cms.ContentInfo.load(receipt)
    signed = content["content"]
    certificates = list(signed["certificates"])
    damaged = asn1_x509.Certificate.load(certificates[0].chosen.dump())
    tbs = damaged["tbs_certificate"]
    _duplicate_first_extension(tbs)
    bad = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs.dump(force=True)),
            "signature_algorithm": damaged["signature_algorithm"],
            "signature_value": damaged["signature_value"].native,
        }
    )
    signed["certificates"] = cms.CertificateSet(
        [cms.CertificateChoices({"certificate": bad}), *certificates]
    )
    if named_by_key_id:
        signer_info = signed["signer_infos"][0]
        signer_info["sid"] = cms.SignerIdentifier({"subject_key_identifier": b"\x01" * 20})
        signer_info["version"] = "v3"
    return content.dump(force=True)


def test_receipt_naming_its_signer_by_key_id_past_an_undecodable_certificate_is_invalid() -> None:
    receipt = _receipt_with_bad_bag_certificate(named_by_key_id=True)
    _, vector = _real_receipt()
    inputs = vector["input"]
    assert isinstance(inputs, dict)
    verify_at = datetime.fromisoformat(str(vector["verify_at"]).replace("Z", "+00:00"))
    for check in (
        lambda: parse_receipt(receipt),
        lambda: verify_receipt(
            receipt, now=verify_at, app_id=inputs["app_id"], public_key=inputs["public_key"]
        ),
    ):
        with pytest.raises(AppleVerificationError) as caught:
            check()
        assert caught.value.reason == Reason.APPLE_RECEIPT_INVALID


def test_an_unused_undecodable_certificate_beside_apples_chain_changes_nothing() -> None:
    """Named by issuer and serial, the signer is found without reading the extra certificate,
    and the chain is built without it: Apple's signature still stands."""
    receipt = _receipt_with_bad_bag_certificate(named_by_key_id=False)
    _, vector = _real_receipt()
    inputs = vector["input"]
    assert isinstance(inputs, dict)
    verify_at = datetime.fromisoformat(str(vector["verify_at"]).replace("Z", "+00:00"))
    verified = verify_receipt(
        receipt, now=verify_at, app_id=inputs["app_id"], public_key=inputs["public_key"]
    )
    assert verified.app_id == inputs["app_id"]
