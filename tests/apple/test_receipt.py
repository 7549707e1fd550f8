"""Receipt validation: what it accepts, each way it refuses, and that bad bytes stay typed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appintegrity.apple import parse_attestation_object
from appintegrity.apple.receipt import (
    Receipt,
    ReceiptType,
    apple_root_ca_g3,
    assess_risk,
    parse_receipt,
    receipt_chain_stats,
    verify_receipt,
)
from appintegrity.errors import AppleVerificationError, Reason
from appintegrity.testing.receipts import (
    ReceiptAuthority,
    ReceiptDefect,
    apple_time,
    encode_payload,
)

from .conftest import attested_certificate_der

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
APP_ID = "ABCDE12345.com.example.app"
CLIENT_HASH = bytes(range(32))
VECTOR = (
    Path(os.environ["APPINTEGRITY_SHARED_VECTORS"]) / "appattest/veehaitch-ios-14.2-receipt-2.json"
)


@pytest.fixture(scope="module")
def authority() -> ReceiptAuthority:
    return ReceiptAuthority(clock=lambda: NOW)


@pytest.fixture(scope="module")
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def attested_certificate(device_key: ec.EllipticCurvePrivateKey) -> bytes:
    return attested_certificate_der(device_key, NOW)


def _issue(authority: ReceiptAuthority, attested_certificate: bytes, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "app_id": APP_ID,
        "attested_certificate_der": attested_certificate,
        "client_hash": CLIENT_HASH,
        "creation_time": NOW,
    }
    arguments.update(overrides)
    return authority.issue(**arguments)  # type: ignore[arg-type]


def _verify(authority: ReceiptAuthority, receipt: bytes | str, **overrides: object) -> Receipt:
    arguments: dict[str, object] = {
        "now": NOW,
        "app_id": APP_ID,
        "trust_roots": [authority.root_certificate],
    }
    arguments.update(overrides)
    return verify_receipt(receipt, **arguments)  # type: ignore[arg-type]


def _refused(authority: ReceiptAuthority, receipt: bytes | str, **overrides: object) -> str:
    with pytest.raises(AppleVerificationError) as caught:
        _verify(authority, receipt, **overrides)
    assert caught.value.reason == Reason.APPLE_RECEIPT_INVALID
    return caught.value.message


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("signed_attributes", [False, True], ids=["content", "attributes"])
def test_attest_receipt_verifies_and_reads_every_field(
    authority: ReceiptAuthority,
    attested_certificate: bytes,
    device_key: ec.EllipticCurvePrivateKey,
    signed_attributes: bool,
) -> None:
    raw = _issue(
        authority,
        attested_certificate,
        token="dG9rZW4=",
        environment="sandbox",
        signed_attributes=signed_attributes,
    )
    receipt = _verify(authority, raw, public_key=device_key.public_key())
    assert receipt.type is ReceiptType.ATTEST
    assert receipt.app_id == APP_ID
    assert receipt.attested_certificate == attested_certificate
    assert receipt.public_key == _point(device_key)
    assert receipt.client_hash == CLIENT_HASH
    assert receipt.token == "dG9rZW4="
    assert receipt.environment == "sandbox"
    assert receipt.creation_time == NOW
    assert receipt.expiration_time == NOW + timedelta(days=90)
    assert receipt.risk_metric is None
    assert receipt.not_before is None
    assert receipt.raw == raw
    assert receipt.signer_chain[0] == authority.signer_certificate.public_bytes(
        serialization.Encoding.DER
    )


def test_refreshed_receipt_reads_risk_metric_and_not_before(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(
        authority,
        attested_certificate,
        type=ReceiptType.RECEIPT,
        risk_metric=7,
        not_before=NOW + timedelta(days=1),
        expiration_time=NOW + timedelta(days=60),
    )
    receipt = _verify(authority, raw)
    assert receipt.type is ReceiptType.RECEIPT
    assert receipt.risk_metric == 7
    assert receipt.not_before == NOW + timedelta(days=1)
    assert receipt.expiration_time == NOW + timedelta(days=60)


def test_receipt_is_accepted_as_standard_or_url_safe_base64(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate)
    assert _verify(authority, base64.b64encode(raw).decode()).raw == raw
    assert _verify(authority, base64.urlsafe_b64encode(raw).decode().rstrip("=")).raw == raw


@pytest.mark.parametrize("spelling", ["key", "point", "point_b64", "pem", "der"])
def test_expected_public_key_in_any_spelling(
    authority: ReceiptAuthority,
    attested_certificate: bytes,
    device_key: ec.EllipticCurvePrivateKey,
    spelling: str,
) -> None:
    public = device_key.public_key()
    spellings: dict[str, object] = {
        "key": public,
        "point": _point(device_key),
        "point_b64": base64.b64encode(_point(device_key)).decode(),
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    raw = _issue(authority, attested_certificate)
    assert _verify(authority, raw, public_key=spellings[spelling]).raw == raw


def test_attestation_receipt_matches_the_software_iphone_factory(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = authority.attestation_receipt(APP_ID, attested_certificate, CLIENT_HASH)
    receipt = _verify(authority, raw)
    assert receipt.type is ReceiptType.ATTEST
    assert receipt.client_hash == CLIENT_HASH
    assert receipt.creation_time == NOW
    assert receipt.environment == "production"


def test_apple_time_is_written_as_apple_writes_it() -> None:
    assert apple_time(datetime(2020, 11, 21, 22, 16, 5, 466000, tzinfo=UTC)) == (
        "2020-11-21T22:16:05.466Z"
    )


def test_embedded_apple_root_is_the_pinned_one() -> None:
    fingerprint = apple_root_ca_g3().fingerprint(hashes.SHA256()).hex()
    assert fingerprint.startswith("63343abf")
    assert fingerprint.endswith("9179")


# --- refused: signature and chain ------------------------------------------------------------


def test_bad_cms_signature_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate, defect=ReceiptDefect.SIGNATURE)
    assert "signature does not verify" in _refused(authority, raw)


def test_bad_signature_over_signed_attributes_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(
        authority, attested_certificate, signed_attributes=True, defect=ReceiptDefect.SIGNATURE
    )
    assert "signature does not verify" in _refused(authority, raw)


def test_wrong_message_digest_attribute_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate, defect=ReceiptDefect.MESSAGE_DIGEST)
    assert "message-digest" in _refused(authority, raw)


def test_receipt_from_an_untrusted_root_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate)
    stranger = ReceiptAuthority()
    assert "does not chain" in _refused(authority, raw, trust_roots=[stranger.root_certificate])
    # Apple's own root is the default: a test-kit receipt never passes it.
    assert "does not chain" in _refused(authority, raw, trust_roots=None)


def test_missing_intermediate_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate, defect=ReceiptDefect.NO_INTERMEDIATE)
    assert "does not chain" in _refused(authority, raw)


def test_signer_without_apple_receipt_marker_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate, defect=ReceiptDefect.UNMARKED_SIGNER)
    assert "1.2.840.113635.100.12.15" in _refused(authority, raw)


def test_expired_signer_at_now_is_refused(attested_certificate: bytes) -> None:
    expired = ReceiptAuthority(signer_not_after=NOW - timedelta(seconds=1))
    raw = _issue(expired, attested_certificate)
    assert "does not chain" in _refused(expired, raw)
    # The same receipt verified while the signer was valid passes: only the clock differs.
    assert _verify(expired, raw, now=NOW - timedelta(days=1)).raw == raw


def test_signer_not_yet_valid_at_now_is_refused(attested_certificate: bytes) -> None:
    early = ReceiptAuthority(signer_not_before=NOW + timedelta(hours=1))
    raw = _issue(early, attested_certificate)
    assert "does not chain" in _refused(early, raw)


def test_a_verified_signer_chain_is_reused_for_the_next_receipt(
    attested_certificate: bytes,
) -> None:
    signer = ReceiptAuthority()
    first = _issue(signer, attested_certificate)
    second = _issue(signer, attested_certificate, creation_time=NOW - timedelta(minutes=1))
    before = receipt_chain_stats()
    _verify(signer, first)
    after_first = receipt_chain_stats()
    assert (after_first.hits, after_first.misses) == (before.hits, before.misses + 1)
    assert _verify(signer, second).creation_time == NOW - timedelta(minutes=1)
    after_second = receipt_chain_stats()
    assert (after_second.hits, after_second.misses) == (after_first.hits + 1, after_first.misses)


def test_a_cached_chain_is_still_refused_once_expired_or_untrusted(
    attested_certificate: bytes,
) -> None:
    signer = ReceiptAuthority(signer_not_after=NOW + timedelta(days=1))
    raw = _issue(signer, attested_certificate)
    _verify(signer, raw)
    assert _verify(signer, raw).raw == raw  # now served from the cache
    hits = receipt_chain_stats().hits
    # Validity is checked at `now` on every call: a day and a second later the signer expired.
    assert "does not chain" in _refused(signer, raw, now=NOW + timedelta(days=1, seconds=1))
    # The cache is keyed by the trust roots too: other roots, or Apple's, do not inherit it.
    stranger = ReceiptAuthority()
    assert "does not chain" in _refused(signer, raw, trust_roots=[stranger.root_certificate])
    assert "does not chain" in _refused(signer, raw, trust_roots=None)
    assert receipt_chain_stats().hits == hits
    # The signer's signature over the content is checked on every call, cached chain or not.
    forged = _issue(signer, attested_certificate, defect=ReceiptDefect.SIGNATURE)
    assert "signature does not verify" in _refused(signer, forged)


def test_real_receipt_after_its_signer_expired_is_refused() -> None:
    vector = json.loads(VECTOR.read_text())
    message = _refused(
        ReceiptAuthority(),
        vector["input"]["receipt"],
        now=datetime(2021, 6, 19, tzinfo=UTC),
        app_id=None,
        trust_roots=None,
    )
    assert "does not chain" in message


def test_real_receipt_with_one_payload_byte_changed_is_refused() -> None:
    vector = json.loads(VECTOR.read_text())
    raw = bytearray(base64.b64decode(vector["input"]["receipt"]))
    position = bytes(raw).index(b"sandbox")
    raw[position] ^= 0x20  # "Sandbox": still a well-formed payload
    message = _refused(
        ReceiptAuthority(),
        bytes(raw),
        now=datetime.fromisoformat(vector["verify_at"]),
        app_id=None,
        trust_roots=None,
    )
    assert "signature does not verify" in message


# --- refused: payload checks -----------------------------------------------------------------


def test_wrong_app_id_is_refused(authority: ReceiptAuthority, attested_certificate: bytes) -> None:
    raw = _issue(authority, attested_certificate)
    assert "app id" in _refused(authority, raw, app_id="ABCDE12345.com.example.other")


def test_wrong_public_key_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert "different public key" in _refused(authority, raw, public_key=other)


def test_stale_receipt_is_refused_when_max_age_is_set(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate, creation_time=NOW - timedelta(minutes=6))
    assert "at most" in _refused(authority, raw, max_age=timedelta(minutes=5))
    assert _verify(authority, raw, max_age=timedelta(minutes=7)).raw == raw
    assert _verify(authority, raw).raw == raw  # no freshness check unless asked


def _signed_payload(authority: ReceiptAuthority, fields: list[tuple[int, bytes]]) -> bytes:
    return authority.sign_payload(encode_payload(fields), signing_time=NOW)


def _fields(attested_certificate: bytes, **replace: bytes | None) -> list[tuple[int, bytes]]:
    base = {
        2: APP_ID.encode(),
        3: attested_certificate,
        4: CLIENT_HASH,
        5: b"token",
        6: b"ATTEST",
        12: b"2025-06-01T12:00:00.000Z",
        21: b"2025-08-30T12:00:00.000Z",
    }
    for name, value in replace.items():
        number = int(name.removeprefix("f"))
        if value is None:
            base.pop(number)
        else:
            base[number] = value
    return sorted(base.items())


def test_well_formed_signed_payload_helper_is_accepted(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    assert _verify(authority, _signed_payload(authority, _fields(attested_certificate))).token == (
        "token"
    )


@pytest.mark.parametrize(
    ("replace", "fragment"),
    [
        ({"f2": None}, "lacks app id"),
        ({"f3": None}, "lacks attested certificate"),
        ({"f21": None}, "lacks expiration time"),
        ({"f6": b"ASSERT"}, "expected ATTEST or RECEIPT"),
        ({"f17": b"-1"}, "risk metric"),
        ({"f17": b"many"}, "risk metric"),
        ({"f12": b"yesterday"}, "not an ISO 8601 time"),
        ({"f12": b"2025-06-01T12:00:00"}, "no time zone"),
        ({"f2": b"\xff\xfe"}, "not UTF-8"),
        ({"f3": b"not a certificate"}, "well-formed"),
    ],
)
def test_malformed_payload_field_is_refused(
    authority: ReceiptAuthority,
    attested_certificate: bytes,
    replace: dict[str, bytes | None],
    fragment: str,
) -> None:
    raw = _signed_payload(authority, _fields(attested_certificate, **replace))
    assert fragment in _refused(authority, raw)


def test_repeated_payload_field_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    fields = [*_fields(attested_certificate), (2, b"ZZZZZ99999.com.evil.app")]
    assert "repeats field 2" in _refused(authority, _signed_payload(authority, fields))


# --- refused: undecodable bytes --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"garbage that is not DER", b"\x30\x80", "not base64 !!", "", "QUJD"],
    ids=["empty", "zero", "garbage", "open-indefinite", "bad-b64", "empty-text", "abc-b64"],
)
def test_garbage_is_refused_with_the_receipt_code(data: bytes | str) -> None:
    with pytest.raises(AppleVerificationError) as caught:
        parse_receipt(data)
    assert caught.value.reason == Reason.APPLE_RECEIPT_INVALID


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.999])
def test_truncated_receipt_is_refused(
    authority: ReceiptAuthority, attested_certificate: bytes, keep: float
) -> None:
    raw = _issue(authority, attested_certificate)
    _refused(authority, raw[: int(len(raw) * keep)])


def test_trailing_bytes_are_refused(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate)
    _refused(authority, raw + b"\x00")


def test_other_cms_content_is_refused() -> None:
    # A ContentInfo of type id-data, not signedData.
    data = bytes.fromhex("300f06092a864886f70d010701a0020400")
    with pytest.raises(AppleVerificationError) as caught:
        parse_receipt(data)
    assert caught.value.reason == Reason.APPLE_RECEIPT_INVALID


def test_naive_now_is_a_programming_error(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    raw = _issue(authority, attested_certificate)
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify(authority, raw, now=NOW.replace(tzinfo=None))


# --- fraud risk ------------------------------------------------------------------------------


def test_assess_risk_compares_the_metric_with_the_threshold(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    refreshed = _verify(
        authority,
        _issue(authority, attested_certificate, type=ReceiptType.RECEIPT, risk_metric=6),
    )
    over = assess_risk(refreshed, threshold=5, now=NOW + timedelta(hours=2))
    assert over.metric == 6
    assert over.over_threshold is True
    assert over.age == timedelta(hours=2)
    assert over.receipt_type is ReceiptType.RECEIPT
    at = assess_risk(refreshed, threshold=6)
    assert at.over_threshold is False
    assert at.age is None


def test_attest_receipt_has_no_metric_and_is_never_over(
    authority: ReceiptAuthority, attested_certificate: bytes
) -> None:
    receipt = _verify(authority, _issue(authority, attested_certificate))
    assessment = assess_risk(receipt, threshold=0)
    assert assessment.metric is None
    assert assessment.over_threshold is False


# --- property-based: untrusted bytes never escape as anything but the typed error -------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_the_typed_error(data: bytes) -> None:
    try:
        parse_receipt(data)
    except AppleVerificationError as error:
        assert error.reason == Reason.APPLE_RECEIPT_INVALID


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=512))
def test_random_text_raises_only_the_typed_error(text: str) -> None:
    try:
        parse_receipt(text)
    except AppleVerificationError as error:
        assert error.reason == Reason.APPLE_RECEIPT_INVALID


_REAL = base64.b64decode(json.loads(VECTOR.read_text())["input"]["receipt"])
_REAL_AT = datetime.fromisoformat(json.loads(VECTOR.read_text())["verify_at"])
_KIT = ReceiptAuthority()


def _kit_receipts() -> list[bytes]:
    certificate = attested_certificate_der(ec.generate_private_key(ec.SECP256R1()), NOW)
    return [
        _KIT.issue(
            app_id=APP_ID,
            attested_certificate_der=certificate,
            client_hash=CLIENT_HASH,
            creation_time=NOW,
            signed_attributes=signed,
        )
        for signed in (False, True)
    ]


_SAMPLES = [
    (_REAL, _REAL_AT, None),
    *((raw, NOW, _KIT.root_certificate) for raw in _kit_receipts()),
]


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[bytes, datetime, x509.Certificate | None]:
    raw, at, root = draw(st.sampled_from(_SAMPLES))
    data = bytearray(raw)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        if not data:
            break
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set":
            data[position] = draw(st.sampled_from([0x00, 0x80, 0xFF, 0x30, 0x31, 0x04, 0x24]))
        elif kind == "delete":
            del data[position]
        elif kind == "insert":
            data.insert(position, draw(st.integers(min_value=0, max_value=255)))
        else:
            del data[position:]
    return bytes(data), at, root


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutated_receipts_raise_only_the_typed_error(
    sample: tuple[bytes, datetime, x509.Certificate | None],
) -> None:
    data, at, root = sample
    roots = None if root is None else [root]
    try:
        verify_receipt(data, now=at, trust_roots=roots)
    except AppleVerificationError as error:
        assert error.reason == Reason.APPLE_RECEIPT_INVALID


# --- with the software iPhone ----------------------------------------------------------------


def test_software_iphone_attestation_carries_a_receipt_that_verifies() -> None:
    ios = pytest.importorskip("appintegrity.testing.ios")
    from appintegrity.apple.attestation import verify_attestation

    ca = ios.AppAttestCA.generate(now=NOW)
    kit = ReceiptAuthority(clock=lambda: NOW)
    phone = ios.SoftwareIPhone(APP_ID, ca=ca, receipt_factory=kit.attestation_receipt)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "server challenge", now=NOW)
    key = verify_attestation(
        attestation,
        key_id=key_id,
        app_id=APP_ID,
        challenge="server challenge",
        trust_roots=ca.trust_roots,
        now=NOW,
    )
    receipt = verify_receipt(
        key.receipt,
        now=NOW,
        app_id=APP_ID,
        public_key=key.public_key,
        trust_roots=[kit.root_certificate],
    )
    assert receipt.type is ReceiptType.ATTEST
    assert receipt.public_key == key.public_key
    assert receipt.attested_certificate == key.certificate_chain[0]
    assert receipt.client_hash == hashlib.sha256(b"server challenge").digest()


# --- Apple's 2020 receipts: signed attributes present, the signature over the content ---------

_KAYAK = json.loads(
    (
        Path(os.environ["APPINTEGRITY_SHARED_VECTORS"])
        / "appattest/webauthn4j-kayak-prod-attestation.json"
    ).read_text()
)


def _kayak_receipt() -> bytes:
    return parse_attestation_object(_KAYAK["input"]["attestation"]).receipt


def test_a_2020_receipt_signing_its_content_despite_signed_attributes_verifies() -> None:
    public_key = serialization.load_pem_public_key(_KAYAK["expect"]["public_key_pem"].encode())
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    receipt = verify_receipt(
        _kayak_receipt(),
        now=datetime.fromisoformat(_KAYAK["verify_at"].replace("Z", "+00:00")),
        app_id=_KAYAK["input"]["app_id"],
        public_key=public_key,
    )
    assert receipt.type is ReceiptType.ATTEST
    assert receipt.app_id == "8YE23NZS57.com.kayak.travel"


def test_that_receipt_with_one_content_byte_changed_is_refused() -> None:
    raw = bytearray(_kayak_receipt())
    # The app id inside the payload: changing it breaks both the signature over the content
    # and the message digest the signed attributes carry.
    index = raw.index(b"8YE23NZS57.com.kayak.travel")
    raw[index] ^= 0x01
    with pytest.raises(AppleVerificationError) as caught:
        verify_receipt(
            bytes(raw), now=datetime.fromisoformat(_KAYAK["verify_at"].replace("Z", "+00:00"))
        )
    assert caught.value.reason == Reason.APPLE_RECEIPT_INVALID
