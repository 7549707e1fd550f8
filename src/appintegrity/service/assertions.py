"""``POST /v1/assertions``: an App Attest assertion or a Play Integrity token for one request.

Order: validate the body → rate limit → consume the payload's challenge (single use even if
verification then fails) → verify → (iOS) advance the counter atomically → decide (iOS: the
key's stored fraud-risk metric against ``max_risk_metric``; Android: the Play Integrity
policy) → issue an app token.

Android apps that could not get a token report Play's client error code instead
(``errorCode``): the challenge is consumed the same way (one report per challenge), and the
app's ``client_error_action`` / ``retryable_client_error_action`` decides. The answer always
names the code and the remedy (``clientError``), never an opaque refusal.

Replays: a replayed assertion carries a used challenge (``challenge.consumed``, 409). Should
two copies race past the challenge anyway (a store without that guarantee, or a challenge
accepted twice), the counter decides: only one ``advance_counter`` succeeds, the other is
refused as ``apple.counter_invalid`` with 409, the same answer as a sequential replay.
"""

from __future__ import annotations

import logging
import time

from appintegrity.errors import AppIntegrityError, AppleVerificationError, Code, Reason
from appintegrity.google.client_errors import ClientError, lookup_client_error
from appintegrity.google.nonce import request_hash
from appintegrity.service.apps import AndroidApp
from appintegrity.service.challenges import challenge_in_payload
from appintegrity.service.errors import BlockedError, ClientErrorBlocked, service_error
from appintegrity.service.receipts import risk_decision
from appintegrity.service.registrations import canonical_key_id, decode_apple_object
from appintegrity.service.schemas import AndroidAssertionRequest, IosAssertionRequest
from appintegrity.service.state import IntegrityService, iso

log = logging.getLogger("appintegrity.service.verification")


async def assert_ios(
    service: IntegrityService, body: IosAssertionRequest, client: str
) -> dict[str, object]:
    started = time.perf_counter()
    app_id = ""
    try:
        key_id = canonical_key_id(body.keyId)
        assertion = decode_apple_object(body.token, "token (the assertion object)")
        challenge = challenge_in_payload(body.payload)
        await service.limiter.verification(client)
        await service.challenges.consume(challenge, purpose="assertion", key_id=key_id)
        key = await service.store.get_key(key_id)
        if key is None:
            raise service_error(Code.KEY_UNKNOWN, "no key with this id is registered")
        app_id = key.app_id
        if key.revoked_at is not None:
            raise service_error(Code.KEY_REVOKED, "this key was revoked: register a new key")
        app = service.apps.ios(key.app_id)
        verified = app.verifier.verify_assertion(
            assertion,
            client_data=body.payload.encode("utf-8"),
            public_key=service.apps.public_key(key.public_key),
            previous_counter=key.counter,
            app_id=key.app_id,
        )
        await service.limiter.device_key(key_id)
        if not await service.store.advance_counter(key_id, verified.counter, service.clock()):
            raise AppleVerificationError(
                Reason.APPLE_COUNTER_INVALID,
                "another request with this counter was accepted first (replay), "
                "or the key was revoked meanwhile",
            )
        # The assertion is used up (counter advanced); the fraud-risk metric decides the rest.
        decision, reasons = risk_decision(app.config, key.risk_metric)
        if decision == "block" and service.config.app_mode(app_id) == "enforce":
            raise BlockedError(
                f"Apple's fraud-risk metric for this device ({key.risk_metric}) is above "
                f"the app's limit ({app.config.max_risk_metric})",
                reasons,
            )
        issued = service.issue_token(
            app_id=key.app_id,
            platform="ios",
            decision=decision,
            limited_use=body.limitedUse,
            device=key_id,
            reasons=reasons,
            binding=body.binding,
        )
    except AppIntegrityError as exc:
        _count_refusal(service, "ios", app_id, exc, started)
        raise
    _count_decision(service, "ios", app_id, decision, reasons, started)
    return {
        "decision": decision,
        "counter": verified.counter,
        "appToken": issued.token,
        "expiresAt": iso(issued.expires_at),
        "reasons": list(reasons),
    }


async def assert_android(
    service: IntegrityService, body: AndroidAssertionRequest, client: str
) -> dict[str, object]:
    started = time.perf_counter()
    app_id = ""  # only configured ids reach logs and metrics, never client text
    client_error: ClientError | None = None
    try:
        app = service.apps.android(body.appId)
        app_id = app.config.id
        challenge = challenge_in_payload(body.payload)
        expected = request_hash(body.payload)
        await service.limiter.verification(client)
        await service.challenges.consume(challenge, purpose="assertion", key_id=None)
        if body.errorCode is not None:
            client_error = lookup_client_error(body.errorCode, body.requestType or "standard")
            decision = _client_error_decision(service, app, client_error)
            reasons: tuple[str, ...] = (Reason.GOOGLE_CLIENT_ERROR.value,)
        else:
            assert body.token is not None  # the schema requires exactly one of the two
            result = await app.verify(body.token, expected=expected, now=service.clock())
            decision = str(result.decision)
            reasons = tuple(str(r) for r in result.reasons)
            service.metrics.policy_monitored(
                platform="android", app=app_id, reasons=tuple(result.monitored)
            )
            if decision == "block" and service.config.app_mode(app_id) == "enforce":
                raise BlockedError("the app's Play Integrity policy refuses this device", reasons)
        issued = service.issue_token(
            app_id=app_id,
            platform="android",
            decision=decision,
            limited_use=body.limitedUse,
            reasons=reasons,
            binding=body.binding,
        )
    except AppIntegrityError as exc:
        _count_refusal(service, "android", app_id, exc, started)
        raise
    _count_decision(service, "android", app_id, decision, reasons, started)
    answer: dict[str, object] = {
        "decision": decision,
        "appToken": issued.token,
        "expiresAt": iso(issued.expires_at),
        "reasons": list(reasons),
    }
    if client_error is not None:
        answer["clientError"] = client_error_answer(client_error)
    return answer


def client_error_answer(error: ClientError) -> dict[str, object]:
    """The wire form of a reported client error (``clientError``, camelCase)."""
    answer: dict[str, object] = {
        "code": error.code,
        "name": error.name,
        "retryable": error.retryable,
        "resolvedBy": error.resolved_by,
        "remediation": error.remediation,
    }
    if error.retry_after_seconds is not None:
        answer["retryAfterSeconds"] = error.retry_after_seconds
    return answer


def _client_error_decision(service: IntegrityService, app: AndroidApp, error: ClientError) -> str:
    """The app's action for a reported client error; ``block`` raises unless monitoring.

    A report is not evidence about the device (anyone can send one), so it never earns
    ``allow``: ``limit`` at best, as configured.
    """
    decision = app.config.client_error_decision(error.retryable)
    log.info(
        "client error app=%s code=%d name=%s retryable=%s decision=%s",
        app.config.id,
        error.code,
        error.name,
        error.retryable,
        decision,
    )
    if decision == "block" and service.config.app_mode(app.config.id) == "enforce":
        retry = " (retryable)" if error.retryable else ""
        raise ClientErrorBlocked(
            f"the app reported Play Integrity error {error.code} {error.name}{retry} instead "
            f"of a token: {error.remediation}",
            client_error_answer(error),
            error.retry_after_seconds,
        )
    return decision


def _count_refusal(
    service: IntegrityService, platform: str, app_id: str, exc: AppIntegrityError, started: float
) -> None:
    """A refused assertion: ``block`` under the policy's first reason, else ``refused``."""
    reason: str = exc.code
    if isinstance(exc, BlockedError) and exc.reasons:
        reason = exc.reasons[0]
    service.metrics.verification(
        platform=platform,
        kind="assertion",
        app=app_id,
        outcome="block" if isinstance(exc, BlockedError | ClientErrorBlocked) else "refused",
        reason=reason,
        started=started,
    )


def _count_decision(
    service: IntegrityService,
    platform: str,
    app_id: str,
    decision: str,
    reasons: tuple[str, ...],
    started: float,
) -> None:
    """A decided assertion; a ``block`` let through (monitor mode) is ``block_monitored``."""
    service.metrics.verification(
        platform=platform,
        kind="assertion",
        app=app_id,
        outcome=decision if decision != "block" else "block_monitored",
        reason=reasons[0] if reasons else "",
        started=started,
    )
