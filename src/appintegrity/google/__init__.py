"""Google Play Integrity: read tokens (locally or through Google), type the verdict, apply a policy.

``token`` decrypts and verifies locally, ``decoder`` asks Google's ``decodeIntegrityToken``,
``verdict`` types the payload, ``policy`` turns it into allow / limit / block, ``nonce`` makes the
binding values, and ``verifier`` ties them together per app.
"""

from __future__ import annotations

from appintegrity.google.decoder import GoogleApiDecoder
from appintegrity.google.policy import (
    Decision,
    PlayIntegrityPolicy,
    PolicyResult,
    RuleAction,
    evaluate_verdict,
)
from appintegrity.google.token import PlayIntegrityKeys, decode_token_locally
from appintegrity.google.verdict import DeviceLevel, IntegrityVerdict
from appintegrity.google.verifier import PlayIntegrityVerifier

__all__ = [
    "Decision",
    "DeviceLevel",
    "GoogleApiDecoder",
    "IntegrityVerdict",
    "PlayIntegrityKeys",
    "PlayIntegrityPolicy",
    "PlayIntegrityVerifier",
    "PolicyResult",
    "RuleAction",
    "decode_token_locally",
    "evaluate_verdict",
]
