"""The framework-neutral core of every adapter: token in, verdict out.

An adapter finds the route's policy, hands the protector the token header (and the bound
header's bytes, exactly as received, when the policy binds), and either answers with
``verdict.status`` and ``verdict.body()`` or passes the request on with ``verdict.claims``.
Each check is counted and logged (without the token) in both modes; only ``enforce`` refuses.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

from appintegrity.errors import Code, ServiceError
from appintegrity.tokens import (
    TOKEN_UNVERIFIABLE,
    AppTokenClaims,
    AppTokenVerifier,
    TokenError,
    binding_for,
)
from appintegrity.web.consumers import TokenConsumer
from appintegrity.web.metrics import WebMetrics, default_metrics
from appintegrity.web.policy import Mode, RoutePolicy

DEFAULT_HEADER = "X-App-Integrity"
logger = logging.getLogger("appintegrity.web")


class Outcome(StrEnum):
    """Why a request passed or would fail: the ``reason`` label in metrics and logs."""

    VERIFIED = "verified"
    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"
    UNVERIFIABLE = "unverifiable"
    DEBUG = "debug"
    LIMITED = "limited"
    BLOCKED = "blocked"
    NOT_LIMITED_USE = "not_limited_use"
    CONSUMED = "consumed"
    BINDING = "binding"


_OUTCOME_OF_CODE: dict[str, Outcome] = {
    Code.TOKEN_MISSING: Outcome.MISSING,
    Code.TOKEN_EXPIRED: Outcome.EXPIRED,
    Code.TOKEN_CONSUMED: Outcome.CONSUMED,
    TOKEN_UNVERIFIABLE: Outcome.UNVERIFIABLE,
}


def bound_value(policy: RoutePolicy, header: Callable[[str], str | None]) -> bytes | None:
    """The bytes of the header ``policy`` binds tokens to, as received (None when the policy
    binds nothing or the request lacks the header); ``header`` looks a header up by name in a
    framework's text headers (``request.headers.get``)."""
    if not policy.binding_header:
        return None
    value = header(policy.binding_header)
    return None if value is None else header_bytes(value)


def header_bytes(value: str) -> bytes:
    """The bytes a header arrived as, from the text a server or framework gives for it.

    PEP 3333 (WSGI), Werkzeug, Django and Starlette all decode header bytes as latin-1, so
    encoding back gives exactly what was received; text beyond latin-1 can only come from a
    server that decoded UTF-8.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def error_body(error: ServiceError | None) -> bytes:
    """The JSON error body every adapter answers: ``{"error": {"code", "message"}}``."""
    if error is None:
        return b"{}"
    payload = {"error": {"code": str(error.code), "message": error.message}}
    return json.dumps(payload).encode()


class Verdict(NamedTuple):
    """What the protector concluded for one request.

    ``allowed`` is what the adapter does; ``error`` is what enforcement answers (or would
    answer, in monitor mode). ``claims`` are set whenever the token verified, even if a
    policy check then failed; never for a token that did not verify.
    """

    allowed: bool
    outcome: Outcome
    claims: AppTokenClaims | None
    error: TokenError | None = None

    @property
    def status(self) -> int:
        return self.error.status if self.error is not None else 200

    def body(self) -> bytes:
        return error_body(self.error)

    def headers(self) -> list[tuple[str, str]]:
        extra = [("content-type", "application/json")]
        if self.error is not None and self.error.status == 503:
            extra.append(("retry-after", "5"))
        if self.error is not None and self.error.status == 401:
            extra.append(("www-authenticate", 'AppIntegrity realm="api"'))
        return extra


class Protector:
    """Checks app tokens against per-route policies, in monitor or enforce mode."""

    def __init__(
        self,
        verifier: AppTokenVerifier,
        *,
        mode: Mode | str = Mode.ENFORCE,
        header: str = DEFAULT_HEADER,
        consumer: TokenConsumer | None = None,
        metrics: WebMetrics | None = None,
    ) -> None:
        self.verifier = verifier
        self.mode = Mode(mode)
        self.header = header
        self.consumer = consumer
        self.metrics = metrics if metrics is not None else default_metrics()
        self._missing = (
            Outcome.MISSING,
            TokenError(Code.TOKEN_MISSING, f"the {header} header is missing"),
        )

    def validate(self, policy: RoutePolicy) -> None:
        """Fail at start-up, not per request, when a policy cannot be served."""
        if policy.require_limited_use and self.consumer is None:
            raise ValueError("a policy requires limited-use tokens but no consumer is set")
        # A consumer that forgets a used id before the verifier stops accepting its token
        # would let that token through twice.
        remembered = getattr(self.consumer, "leeway_seconds", None)
        if (
            policy.require_limited_use
            and remembered is not None
            and remembered < self.verifier.leeway
        ):
            raise ValueError(
                f"the consumer remembers used tokens {remembered} s past expiry, less than "
                f"the verifier's leeway of {self.verifier.leeway} s"
            )

    # The checks, split so the sync and async paths share everything but the I/O. ---------

    def _policy(
        self, claims: AppTokenClaims, policy: RoutePolicy, binding_value: str | bytes | None
    ) -> tuple[Outcome, TokenError] | None:
        if policy.refuse_debug and claims.debug:
            error = TokenError(
                Code.TOKEN_DEBUG_REFUSED, "debug tokens are not accepted on this route", 403
            )
            return Outcome.DEBUG, error
        if claims.decision == "limit" and not policy.accept_limit:
            error = TokenError(
                Code.TOKEN_LIMITED_DECISION,
                "this route needs decision 'allow'; the token's decision is 'limit'",
                403,
            )
            return Outcome.LIMITED, error
        if claims.decision not in ("allow", "limit"):
            error = TokenError(
                Code.DECISION_BLOCKED, f"token decision {claims.decision!r} is not accepted", 403
            )
            return Outcome.BLOCKED, error
        if policy.binding_header is not None:
            expected = claims.binding
            if (
                expected is None
                or binding_value is None
                or not hmac.compare_digest(
                    binding_for(binding_value).encode(), expected.encode("utf-8", "replace")
                )
            ):
                error = TokenError(
                    Code.TOKEN_BINDING_MISMATCH,
                    f"the token is not bound to this request's {policy.binding_header} header",
                )
                return Outcome.BINDING, error
        if policy.require_limited_use:
            if not claims.limited_use:
                error = TokenError(
                    Code.TOKEN_NOT_LIMITED_USE, "this route needs a limited-use token", 403
                )
                return Outcome.NOT_LIMITED_USE, error
            if self.consumer is None:
                return Outcome.UNVERIFIABLE, TokenError(
                    TOKEN_UNVERIFIABLE, "no token consumer is configured", 503
                )
        return None

    def _conclude(
        self,
        route: str,
        policy: RoutePolicy,
        claims: AppTokenClaims | None,
        failure: tuple[Outcome, TokenError] | None,
    ) -> Verdict:
        mode = policy.mode or self.mode
        if failure is None:
            self.metrics.record(route, mode, "verified", Outcome.VERIFIED, "allowed")
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("app token verified on %s (jti %s)", route, claims and claims.jti)
            return Verdict(True, Outcome.VERIFIED, claims)
        outcome, error = failure
        optional_and_missing = outcome is Outcome.MISSING and not policy.require_token
        allowed = mode is Mode.MONITOR or optional_and_missing
        action = "allowed" if allowed else "refused"
        self.metrics.record(route, mode, "unverified", outcome, action)
        if not optional_and_missing:
            logger.info(
                "app token unverified on %s: %s (%s); %s in %s mode",
                route,
                outcome.value,
                error.code,
                action,
                mode.value,
                extra={"route": route, "reason": outcome.value, "code": str(error.code)},
            )
        return Verdict(allowed, outcome, claims, error)

    @staticmethod
    def _failure(error: TokenError) -> tuple[Outcome, TokenError]:
        return _OUTCOME_OF_CODE.get(error.code, Outcome.INVALID), error

    def check(
        self,
        token: str | None,
        policy: RoutePolicy,
        *,
        route: str,
        binding_value: str | bytes | None = None,
    ) -> Verdict:
        """Check one request's token (blocking I/O, if any: WSGI, Flask, Django).

        ``binding_value`` is the bound header's bytes as received (``header_bytes`` recovers
        them from a framework's text); text is hashed as UTF-8.
        """
        if not token:
            return self._conclude(route, policy, None, self._missing)
        try:
            claims = self.verifier.verify(token)
        except TokenError as error:
            return self._conclude(route, policy, None, self._failure(error))
        failure = self._policy(claims, policy, binding_value)
        if failure is None and policy.require_limited_use and self.consumer is not None:
            try:
                self.consumer.consume(token, claims)
            except TokenError as error:
                failure = self._failure(error)
        return self._conclude(route, policy, claims, failure)

    async def check_async(
        self,
        token: str | None,
        policy: RoutePolicy,
        *,
        route: str,
        binding_value: str | bytes | None = None,
    ) -> Verdict:
        """Check one request's token; JWKS refreshes and consumption are awaited (ASGI)."""
        if not token:
            return self._conclude(route, policy, None, self._missing)
        try:
            claims = await self.verifier.verify_async(token)
        except TokenError as error:
            return self._conclude(route, policy, None, self._failure(error))
        failure = self._policy(claims, policy, binding_value)
        if failure is None and policy.require_limited_use and self.consumer is not None:
            try:
                await self.consumer.consume_async(token, claims)
            except TokenError as error:
                failure = self._failure(error)
        return self._conclude(route, policy, claims, failure)
