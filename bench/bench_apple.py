"""App Attest: assertions and attestations verified per second, beside the raw ECDSA they cost.

An assertion is one P-256 verification; an attestation, once the intermediate → root link is
cached, is one P-384 verification (the credential certificate's signature). Targets on the
reference 2-core machine, one core: assertions >= 85 % of raw P-256 verifies/s, attestations
>= 80 % of raw P-384 verifies/s.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple import AppAttestVerifier, load_public_key, parse_attestation_object
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
from bench.harness import header, ops_per_second, pin_to_one_core, ratio, row

APP_ID = "ABCDE12345.com.example.bench"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ROUNDS = 3
_REPO = Path(__file__).resolve().parents[1]
# ../shared/vectors beside the checkout when it is there, else the snapshot the tests use.
_VECTORS = next(
    (
        d
        for d in (_REPO.parent / "shared" / "vectors", _REPO / "tests" / "vectors" / "shared")
        if d.is_dir()
    ),
    _REPO / "tests" / "vectors" / "shared",
)
REAL_VECTOR = _VECTORS / "appattest" / "uebelack-production-attestation.json"


def _raw_verify(curve: ec.EllipticCurve) -> Callable[[], None]:
    """The primitive alone: ECDSA-SHA256 verification of a 32-byte message, key preloaded."""
    private_key = ec.generate_private_key(curve)
    public_key = private_key.public_key()
    message = hashlib.sha256(b"nonce").digest()
    signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    algorithm = ec.ECDSA(hashes.SHA256())
    return lambda: public_key.verify(signature, message, algorithm)


def _raw_leaf_verify(attestation: bytes) -> Callable[[], None]:
    """The P-384 check an attestation really makes: its leaf's signature by the intermediate."""
    parsed = parse_attestation_object(attestation)
    leaf = x509.load_der_x509_certificate(parsed.x5c[0])
    issuer_key = x509.load_der_x509_certificate(parsed.x5c[1]).public_key()
    assert isinstance(issuer_key, ec.EllipticCurvePublicKey)
    tbs, signature = leaf.tbs_certificate_bytes, leaf.signature
    algorithm = ec.ECDSA(hashes.SHA256())
    return lambda: issuer_key.verify(signature, tbs, algorithm)


def _interleaved(*functions: Callable[[], object], batch: int = 50) -> list[float]:
    """Best rate of each function over rounds that alternate between them.

    The other core is shared: alternating keeps a burst of load from the neighbours from
    landing on one side of a ratio only.
    """
    best = [0.0] * len(functions)
    for _ in range(ROUNDS):
        for index, function in enumerate(functions):
            best[index] = max(best[index], ops_per_second(function, seconds=0.6, batch=batch))
    return best


def main() -> None:
    pin_to_one_core()
    header("Apple App Attest (one core)")

    ca = AppAttestCA.generate(now=NOW)
    phone = SoftwareIPhone(APP_ID, ca=ca)
    verifier = AppAttestVerifier(APP_ID, trust_roots=ca.trust_roots)
    key_id = phone.generate_key()
    attestation = phone.attest_key(key_id, "challenge", now=NOW)
    attested = verifier.verify_attestation(
        attestation, key_id=key_id, challenge="challenge", now=NOW
    )

    # Assertions: the stored key, loaded once by the caller (as a service keeps it).
    public_key = load_public_key(attested.public_key)
    client_data = b'{"action":"transfer","amount":100}'
    assertion = phone.generate_assertion(key_id, client_data)
    assertion_b64 = base64.b64encode(assertion).decode()
    point_b64 = base64.b64encode(attested.public_key).decode()
    raw_p256, assertions, assertions_text = _interleaved(
        _raw_verify(ec.SECP256R1()),
        lambda: verifier.verify_assertion(
            assertion, client_data=client_data, public_key=public_key, previous_counter=0
        ),
        lambda: verifier.verify_assertion(
            assertion_b64, client_data=client_data, public_key=point_b64, previous_counter=0
        ),
    )
    row("raw cryptography P-256 ECDSA verify", raw_p256)
    row("assertions verified (bytes, loaded key)", assertions)
    row("assertions verified (base64 assertion, base64 key)", assertions_text)

    raw_p384, attestations = _interleaved(
        _raw_verify(ec.SECP384R1()),
        lambda: verifier.verify_attestation(
            attestation, key_id=key_id, challenge="challenge", now=NOW
        ),
        batch=10,
    )
    row("raw cryptography P-384 ECDSA verify", raw_p384)
    row("attestations verified (test-kit CA)", attestations)

    real: tuple[float, float] | None = None
    if REAL_VECTOR.is_file():
        vector = json.loads(REAL_VECTOR.read_text(encoding="utf-8"))
        inputs = vector["input"]
        real_now = datetime.fromisoformat(vector["verify_at"].replace("Z", "+00:00"))
        real_attestation = base64.b64decode(inputs["attestation"])
        apple = AppAttestVerifier(inputs["app_id"])
        real_raw, real_rate = _interleaved(
            _raw_leaf_verify(real_attestation),
            lambda: apple.verify_attestation(
                real_attestation,
                key_id=inputs["key_id"],
                challenge=inputs["challenge"],
                now=real_now,
            ),
            batch=10,
        )
        real = (real_raw, real_rate)
        row("raw P-384 verify of a real attestation's leaf signature", real_raw)
        row("attestations verified (real iPhone, Apple root)", real_rate)
    stats = verifier.chain_verifier.stats
    print(f"  chain-link cache (test kit): {stats.hits:,} hits, {stats.misses} miss(es)")

    ratio("assertions / raw P-256", assertions, raw_p256, 0.85)
    ratio("assertions (base64 in, base64 key) / raw P-256", assertions_text, raw_p256)
    ratio("attestations (test kit) / raw P-384", attestations, raw_p384, 0.80)
    if real is not None:
        ratio("attestations (real) / raw P-384 of the same leaf", real[1], real[0], 0.80)


if __name__ == "__main__":
    main()
