"""The ``play-integrity`` vector kind: decrypt, verify and judge a token at ``verify_at``.

Input: ``token``, ``decryption_key``, ``verification_key`` (Play Console base64), ``package_name``,
one of ``request_hash`` / ``nonce``, ``certificate_digests`` (a non-empty list) and
``max_age_seconds``, all required: no vector is "valid" without a check the format names. "Valid"
is the README's definition: recognized by Play, device integrity or better, licensed, bound,
fresh, this package and certificate. Those failures raise the first reason in the README's order.
The opt-in signals (Play Protect, app access, device activity) are judged by the default policy
too, but only shape ``decision`` (``limit``), never validity.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from appintegrity.cli.vectors import (
    VectorFormatError,
    int_field,
    optional_text_field,
    required_text_list_field,
    text_field,
)
from appintegrity.errors import ConfigError, GoogleVerificationError
from appintegrity.google.policy import Decision, PlayIntegrityPolicy, evaluate_verdict
from appintegrity.google.token import PlayIntegrityKeys, decode_token_locally
from appintegrity.google.verdict import IntegrityVerdict


def run(inputs: Mapping[str, object], verify_at: datetime) -> dict[str, object]:
    """Verify the token; raise ``GoogleVerificationError`` with the first failing reason."""
    token = text_field(inputs, "token")
    decryption_key = text_field(inputs, "decryption_key")
    verification_key = text_field(inputs, "verification_key")
    package_name = text_field(inputs, "package_name")
    request_hash = optional_text_field(inputs, "request_hash")
    nonce = optional_text_field(inputs, "nonce")
    if (request_hash is None) == (nonce is None):
        raise VectorFormatError("input needs exactly one of request_hash and nonce")
    digests = required_text_list_field(inputs, "certificate_digests")
    max_age = int_field(inputs, "max_age_seconds", minimum=0)
    try:
        keys = PlayIntegrityKeys.from_base64(decryption_key, verification_key)
        policy = PlayIntegrityPolicy(
            package_name=package_name, certificate_digests=tuple(digests), max_age_seconds=max_age
        )
    except ConfigError as exc:
        raise VectorFormatError(exc.message) from exc
    if verify_at.tzinfo is None:
        raise VectorFormatError("verify_at must carry a time zone")

    verdict = IntegrityVerdict.from_payload(decode_token_locally(token, keys))
    result = evaluate_verdict(
        verdict, policy, now=verify_at, request_hash=request_hash, nonce=nonce
    )
    if result.decision is Decision.BLOCK:
        blocking = [r for r in result.reasons if policy.actions[r] == "block"]
        raise GoogleVerificationError(
            blocking[0], f"verdict check failed: {', '.join(result.reasons)}"
        )
    return {
        "valid": True,
        "decision": result.decision.value,
        "reasons": list(result.reasons),
        "monitored": list(result.monitored),
        "verdict": verdict.summary(),
    }
