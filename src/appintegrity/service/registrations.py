"""``POST /v1/registrations``: verify an App Attest attestation and store the device key.

Order (each step's failure is final): validate the body → rate limit → consume the challenge
(single use even if what follows fails) → Apple's attestation steps → the receipt (recorded;
final only with ``require_valid_receipt``) → insert the key if absent (``key.exists``
otherwise; durable before the 201) → issue an app token.
"""

from __future__ import annotations

import time
from datetime import datetime

from appintegrity.apple.attestation import AppAttestVerifier, AttestedKey
from appintegrity.encoding import EncodingError, b64_encode, b64decode_lenient, normalize_key_id
from appintegrity.errors import AppIntegrityError, AppleVerificationError, Code, Reason
from appintegrity.service.errors import service_error
from appintegrity.service.receipts import check_attestation_receipt
from appintegrity.service.schemas import RegistrationRequest
from appintegrity.service.state import IntegrityService, iso
from appintegrity.store.base import DeviceKey


def canonical_key_id(text: str) -> str:
    """The key id in its canonical spelling (standard base64 of the 32 bytes)."""
    try:
        return b64_encode(normalize_key_id(text))
    except EncodingError as exc:
        raise service_error(
            Code.REQUEST_INVALID, f"keyId is not a 32-byte key id in base64 or hex: {exc}"
        ) from exc


def decode_apple_object(text: str, what: str) -> bytes:
    try:
        return b64decode_lenient(text)
    except EncodingError as exc:
        raise AppleVerificationError(Reason.APPLE_MALFORMED, f"{what} is not base64") from exc


def _verify(
    verifier: AppAttestVerifier, attestation: bytes, key_id: str, challenge: str, now: datetime
) -> AttestedKey:
    """Apple's steps with clientDataHash = SHA-256(challenge text), as the client SDKs do it.

    Some apps (Apple's own samples among them) pass the server's random bytes themselves as
    the clientDataHash: the challenge's 32 decoded bytes are accepted in the same pass. Both
    are bound to the same one-time challenge.
    """
    try:
        raw: bytes | None = b64decode_lenient(challenge)
    except EncodingError:
        raw = None
    return verifier.verify_attestation(
        attestation,
        key_id=key_id,
        challenge=challenge.encode("utf-8"),
        also_client_data_hash=raw if raw is not None and len(raw) == 32 else None,
        now=now,
    )


async def register(
    service: IntegrityService, body: RegistrationRequest, client: str
) -> dict[str, object]:
    started = time.perf_counter()
    app_id = ""
    try:
        key_id = canonical_key_id(body.keyId)
        attestation = decode_apple_object(body.token, "token (the attestation object)")
        await service.limiter.verification(client)
        await service.challenges.consume(body.challenge, purpose="attestation", key_id=key_id)
        app = service.apps.ios_for_attestation(attestation)
        now = service.clock()
        attested = _verify(app.verifier, attestation, key_id, body.challenge, now)
        app_id = attested.app_id
        await service.limiter.device_key(key_id)
        # The receipt is its own step beside Apple's verdict: it feeds fraud assessment.
        receipt = check_attestation_receipt(app, attested, now)
        service.metrics.receipt(
            source="registration",
            app=app_id,
            outcome=receipt.outcome,
            reason=receipt.reason or "",
        )
        if not receipt.valid and app.config.require_valid_receipt:
            raise AppleVerificationError(
                Reason.APPLE_RECEIPT_INVALID,
                f"this app requires a valid receipt: {receipt.message}",
            )
        record = DeviceKey.registered(
            attested, now, receipt=receipt.receipt, risk_metric=receipt.risk_metric
        )
        if not await service.store.add_key(record):
            raise service_error(Code.KEY_EXISTS, "this key is already registered")
        issued = service.issue_token(
            app_id=attested.app_id,
            platform="ios",
            decision="allow",
            device=key_id,
            binding=body.binding,
        )
    except AppIntegrityError as exc:
        service.metrics.verification(
            platform="ios",
            kind="registration",
            app=app_id,
            outcome="refused",
            reason=exc.code,
            started=started,
        )
        raise
    service.metrics.verification(
        platform="ios", kind="registration", app=app_id, outcome="allow", reason="", started=started
    )
    return {
        "keyId": key_id,
        "environment": str(attested.environment),
        "appToken": issued.token,
        "expiresAt": iso(issued.expires_at),
        "receipt": {"valid": receipt.valid, "riskMetric": receipt.risk_metric},
    }
