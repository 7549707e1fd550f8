"""Apple App Attest verification: attestations, assertions (and receipts, in ``receipt``).

Pure functions of their inputs: bytes in, a frozen dataclass out, or an
``AppleVerificationError`` whose ``reason`` names the failed step. The clock (``now``) and the
trust roots are passed in; ``trust_roots=None`` means Apple's embedded, pinned root.

    verifier = AppAttestVerifier("TEAMID.com.example.app", environment="production")
    key = verifier.verify_attestation(attestation_b64, key_id=key_id, challenge=challenge,
                                      now=datetime.now(UTC))
    result = verifier.verify_assertion(assertion_b64, client_data=body,
                                       public_key=key.public_key, previous_counter=0)
"""

from appintegrity.apple.assertion import (
    Assertion,
    VerifiedAssertion,
    parse_assertion,
    verify_assertion,
)
from appintegrity.apple.attestation import (
    AppAttestVerifier,
    AttestationObject,
    AttestedKey,
    Environment,
    parse_attestation_object,
    verify_attestation,
)
from appintegrity.apple.authdata import AuthenticatorData
from appintegrity.apple.certificates import (
    APPLE_APP_ATTESTATION_ROOT_SHA256,
    ChainVerifier,
    LinkCacheStats,
    apple_app_attestation_root,
)
from appintegrity.apple.keys import load_public_key

__all__ = [
    "APPLE_APP_ATTESTATION_ROOT_SHA256",
    "AppAttestVerifier",
    "Assertion",
    "AttestationObject",
    "AttestedKey",
    "AuthenticatorData",
    "ChainVerifier",
    "Environment",
    "LinkCacheStats",
    "VerifiedAssertion",
    "apple_app_attestation_root",
    "load_public_key",
    "parse_assertion",
    "parse_attestation_object",
    "verify_assertion",
    "verify_attestation",
]
