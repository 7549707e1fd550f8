"""The x5c chain of an attestation: Apple's pinned root, and chain verification at ``now``.

Every attestation carries the same intermediate ("Apple App Attestation CA 1"), so the
intermediate → root link is verified once and remembered, keyed by the exact DER of both
certificates. The leaf's signature and every certificate's validity at ``now`` are checked on
every call: those are what change from one attestation to the next.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from appintegrity.errors import AppleVerificationError, Reason

# What cryptography raises for a certificate it cannot decode, often only when a field is first
# read: ValueError for most damage, UnsupportedAlgorithm for odd keys, and two exceptions of its
# own (not ValueErrors) for a duplicated extension or a general name type it does not support.
CERTIFICATE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

APPLE_APP_ATTESTATION_ROOT_SHA256 = (
    "1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932"
)
_ROOT_RESOURCE = "Apple_App_Attestation_Root_CA.pem"

_MAX_CACHED = 256
_DER = Encoding.DER


def _invalid(message: str) -> AppleVerificationError:
    return AppleVerificationError(Reason.APPLE_CERTIFICATE_CHAIN_INVALID, message)


@lru_cache(maxsize=1)
def apple_app_attestation_root() -> x509.Certificate:
    """The embedded Apple App Attestation Root CA, refused unless its SHA-256 is the pinned one.

    Pinning the root (never the intermediate, which expires in 2030) guards against a
    tampered installation substituting its own root.
    """
    pem = resources.files("appintegrity.apple").joinpath("roots", _ROOT_RESOURCE).read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    fingerprint = hashlib.sha256(certificate.public_bytes(_DER)).hexdigest()
    if not hmac.compare_digest(fingerprint, APPLE_APP_ATTESTATION_ROOT_SHA256):
        raise RuntimeError(
            f"embedded Apple App Attestation root has SHA-256 {fingerprint}, "
            f"expected {APPLE_APP_ATTESTATION_ROOT_SHA256}: the installation is damaged"
        )
    return certificate


@dataclass(frozen=True, slots=True)
class LinkCacheStats:
    """How often a chain link's verification was reused (hits) or performed (misses)."""

    hits: int
    misses: int
    size: int


class VerifiedLinks:
    """Links already verified, each keyed by the exact DER bytes it was verified over.

    Only what cannot change with time may be remembered here (signatures, CA constraints,
    names): whoever consults it still checks validity at ``now`` on every call. Bounded by
    clearing when full (the working set is one or two intermediates). Safe to share between
    threads: set operations are atomic, and the counts are statistics, not decisions.
    """

    def __init__(self, max_size: int = _MAX_CACHED) -> None:
        self._max_size = max_size
        self._keys: set[Hashable] = set()
        self._hits = 0
        self._misses = 0

    def seen(self, key: Hashable) -> bool:
        """Whether ``key`` was verified before; counted as a hit or a miss."""
        if key in self._keys:
            self._hits += 1
            return True
        self._misses += 1
        return False

    def add(self, key: Hashable) -> None:
        """Remember ``key`` as verified."""
        if len(self._keys) >= self._max_size:
            self._keys.clear()
        self._keys.add(key)

    @property
    def stats(self) -> LinkCacheStats:
        return LinkCacheStats(self._hits, self._misses, len(self._keys))


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def check_validity(certificate: x509.Certificate, now: datetime, what: str) -> None:
    """Refuse a certificate outside its validity period at ``now`` (expired leaves included)."""
    if now < certificate.not_valid_before_utc:
        raise _invalid(
            f"{what} is not valid before {certificate.not_valid_before_utc.isoformat()} "
            f"(verifying at {now.isoformat()})"
        )
    if now > certificate.not_valid_after_utc:
        raise _invalid(
            f"{what} expired at {certificate.not_valid_after_utc.isoformat()} "
            f"(verifying at {now.isoformat()})"
        )


def _check_no_unknown_critical(certificate: x509.Certificate, what: str) -> None:
    try:
        extensions = certificate.extensions
    except CERTIFICATE_ERRORS as exc:
        raise _invalid(f"{what} has undecodable extensions ({exc})") from exc
    for extension in extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise _invalid(
                f"{what} has an unrecognised critical extension {extension.oid.dotted_string}"
            )


def _check_issuer_is_ca(issuer: x509.Certificate, cas_below: int, what: str) -> None:
    """RFC 5280 §6.1.4: an issuer must be a CA, allowed to sign certificates, within pathLen."""
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise _invalid(f"{what} has no basic constraints: it is not a CA") from None
    except CERTIFICATE_ERRORS as exc:
        raise _invalid(f"{what} has undecodable extensions ({exc})") from exc
    if not constraints.ca:
        raise _invalid(f"{what} is not a CA (basic constraints ca=false)")
    if constraints.path_length is not None and cas_below > constraints.path_length:
        raise _invalid(f"{what} allows {constraints.path_length} CAs below it, found {cas_below}")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except CERTIFICATE_ERRORS as exc:
        raise _invalid(f"{what} has undecodable extensions ({exc})") from exc
    if not usage.key_cert_sign:
        raise _invalid(f"{what} is not allowed to sign certificates (key usage)")


def check_signature(
    child: x509.Certificate,
    issuer: x509.Certificate,
    what: str,
    public_key: CertificatePublicKeyTypes | None = None,
    *,
    check_name: bool = True,
) -> None:
    """Check that ``issuer`` names and signed ``child`` (one public-key operation).

    Pass the issuer's already-loaded ``public_key`` when verifying repeatedly: OpenSSL
    prepares a freshly loaded key on its first use, which costs more than a tenth of a
    P-384 verification.
    """
    try:
        if check_name and child.issuer != issuer.subject:
            raise _invalid(
                f"{what} is issued by {child.issuer.rfc4514_string()!r}, "
                f"not by {issuer.subject.rfc4514_string()!r}"
            )
        if public_key is None:
            public_key = issuer.public_key()
        algorithm = child.signature_hash_algorithm
        # Apple signs with SHA-256 and SHA-384; nothing weaker is accepted in a chain.
        if algorithm is not None and not isinstance(algorithm, _ACCEPTED_HASHES):
            raise _invalid(f"{what} is signed with {algorithm.name}, which is not accepted")
        if isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
            public_key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
            public_key.verify(
                child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(), algorithm
            )
        else:
            raise _invalid(f"{what} uses an unsupported signature algorithm")
    except InvalidSignature:
        raise _invalid(f"{what} has a signature that does not verify") from None
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _invalid(f"{what} has an unusable signature ({exc})") from exc


_ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def parse_certificate(der: bytes, what: str) -> x509.Certificate:
    """Load one DER certificate; undecodable bytes are ``apple.malformed``."""
    if not isinstance(der, bytes):
        raise AppleVerificationError(
            Reason.APPLE_MALFORMED, f"{what} must be a byte string, found {type(der).__name__}"
        )
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise AppleVerificationError(
            Reason.APPLE_MALFORMED, f"{what} is not a DER certificate ({exc})"
        ) from exc


@dataclass(slots=True)
class _Issuer:
    """A CA certificate seen before: parsed once, its key loaded once."""

    certificate: x509.Certificate
    der: bytes
    public_key: CertificatePublicKeyTypes
    ca_checked_depths: set[int]
    anchor: _Issuer | None = None  # the trust root named as its issuer, once looked up


def _issuer_record(certificate: x509.Certificate, der: bytes, what: str) -> _Issuer:
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _invalid(f"{what} has an unusable public key ({exc})") from exc
    return _Issuer(certificate, der, public_key, set())


class ChainVerifier:
    """Verifies leaf-first DER chains against fixed trust roots, caching verified CA links.

    Safe to share between threads: the caches only grow by whole entries (set/dict
    operations are atomic), and are bounded by clearing when full (the working set is one or
    two intermediates).
    """

    def __init__(self, trust_roots: Sequence[x509.Certificate]) -> None:
        if not trust_roots:
            raise ValueError("at least one trust root is required")
        self._roots = tuple(trust_roots)
        self._anchors = [
            _issuer_record(root, root.public_bytes(_DER), "a trust root") for root in self._roots
        ]
        self._anchor_by_der = {anchor.der: anchor for anchor in self._anchors}
        self._issuers: dict[bytes, _Issuer] = {}
        self._links = VerifiedLinks()

    @property
    def trust_roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @property
    def stats(self) -> LinkCacheStats:
        """Counts of CA-link verifications reused and performed (the leaf's are never cached)."""
        return self._links.stats

    def _issuer(self, der: bytes, what: str) -> _Issuer:
        issuer = self._issuers.get(der)
        if issuer is None:
            issuer = _issuer_record(parse_certificate(der, what), der, what)
            if len(self._issuers) >= _MAX_CACHED:
                self._issuers.clear()
            self._issuers[der] = issuer
        return issuer

    @staticmethod
    def _check_ca(issuer: _Issuer, cas_below: int, what: str) -> None:
        if cas_below not in issuer.ca_checked_depths:
            _check_issuer_is_ca(issuer.certificate, cas_below, what)
            issuer.ca_checked_depths.add(cas_below)

    def verify(
        self, chain: Sequence[bytes], now: datetime, *, leaf: x509.Certificate | None = None
    ) -> x509.Certificate:
        """Verify ``chain`` (DER, leaf first) to a trust root at ``now``; return the leaf.

        Raises ``apple.certificate_chain_invalid`` for any failure of trust, signature,
        validity or CA constraints, and ``apple.malformed`` for undecodable certificates.
        """
        try:
            return self._verify(chain, now, leaf)
        except CERTIFICATE_ERRORS as exc:
            # cryptography decodes certificate fields lazily, on first access.
            raise AppleVerificationError(
                Reason.APPLE_MALFORMED, f"a certificate of the x5c chain is undecodable ({exc})"
            ) from exc

    def _verify(
        self, chain: Sequence[bytes], now: datetime, leaf: x509.Certificate | None
    ) -> x509.Certificate:
        now = _as_utc(now)
        if not chain:
            raise _invalid("the x5c chain is empty")
        ders = list(chain)
        anchor: _Issuer | None = None
        if len(ders) > 1 and ders[-1] in self._anchor_by_der:
            # The chain may include the root itself; it is trusted only because it is ours.
            anchor = self._anchor_by_der[ders.pop()]
        if leaf is None:
            leaf = parse_certificate(ders[0], "credential certificate (x5c[0])")
        issuers = [
            self._issuer(der, f"certificate x5c[{index}]")
            for index, der in enumerate(ders[1:], start=1)
        ]
        if anchor is None:
            if issuers:
                top = issuers[-1]
                if top.anchor is None:
                    top.anchor = self._find_anchor(top.certificate)
                anchor = top.anchor
            else:
                anchor = self._find_anchor(leaf)

        # Validity of every certificate at `now`, on every call.
        check_validity(leaf, now, "the credential certificate (x5c[0])")
        _check_no_unknown_critical(leaf, "the credential certificate (x5c[0])")
        for index, issuer in enumerate(issuers, start=1):
            check_validity(issuer.certificate, now, f"certificate x5c[{index}]")
        check_validity(anchor.certificate, now, "the trust root")

        parents = [*issuers, anchor]
        # The leaf link: always verified, it is different for every attestation.
        self._check_ca(parents[0], 0, "the credential certificate's issuer")
        # Its issuer name is not compared: decoding it costs more than all the other checks,
        # and the signature by the (cached, verified) CA's key is what proves the issuer.
        check_signature(
            leaf,
            parents[0].certificate,
            "the credential certificate (x5c[0])",
            parents[0].public_key,
            check_name=False,
        )
        # The CA links: verified once per distinct (child, parent, depth).
        for index, child in enumerate(issuers, start=1):
            parent = parents[index]
            key = (child.der, parent.der, index)
            if self._links.seen(key):
                continue
            what = f"certificate x5c[{index}]"
            _check_no_unknown_critical(child.certificate, what)
            self._check_ca(parent, index, f"the issuer of x5c[{index}]")
            check_signature(child.certificate, parent.certificate, what, parent.public_key)
            self._links.add(key)
        return leaf

    def _find_anchor(self, top: x509.Certificate) -> _Issuer:
        for anchor in self._anchors:
            if anchor.certificate.subject == top.issuer:
                return anchor
        raise _invalid(
            f"the chain ends at {top.issuer.rfc4514_string()!r}, which is not a trusted root"
        )
