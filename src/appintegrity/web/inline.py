"""Inline mode: a backend that embeds the library verifies device proofs itself, no service.

Each protected request carries either an App Attest assertion over its body
(``X-App-Attest-Key-Id`` + ``X-App-Attest-Assertion``, the key registered earlier in the
shared store) or a Play Integrity token whose ``requestHash`` is base64url(SHA-256(body))
(``X-Play-Integrity-Token``). ``InlineVerifier`` checks them with the core verifiers and the
store; ``InlineMiddleware`` does it in front of an ASGI app and puts the ``DeviceProof`` on
``request.state.app_integrity``.

Replays are refused through the store: an assertion's counter must advance atomically, and a
Play token is consumed once (by its hash) while it could still pass the freshness check.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appintegrity.apple import AppAttestVerifier
from appintegrity.encoding import EncodingError, b64_encode, b64url_encode, normalize_key_id
from appintegrity.errors import (
    Code,
    Reason,
    ServiceError,
    StoreUnavailableError,
    VerificationError,
)
from appintegrity.google import Decision, PlayIntegrityVerifier
from appintegrity.google.nonce import request_hash
from appintegrity.store.base import Store
from appintegrity.web.metrics import WebMetrics, default_metrics
from appintegrity.web.policy import Mode, RoutePolicy, RouteSpec, RouteTable, route_table

KEY_ID_HEADER = "X-App-Attest-Key-Id"
ASSERTION_HEADER = "X-App-Attest-Assertion"
PLAY_INTEGRITY_HEADER = "X-Play-Integrity-Token"
MAX_BODY_BYTES = 1 << 20
logger = logging.getLogger("appintegrity.web.inline")
_NOT_FOR_THIS_REQUEST = frozenset(
    {
        Reason.GOOGLE_REQUEST_HASH_MISMATCH,
        Reason.GOOGLE_NONCE_MISMATCH,
        Reason.GOOGLE_STALE,
        Reason.GOOGLE_PACKAGE_MISMATCH,
    }
)


@dataclass(frozen=True, slots=True)
class DeviceProof:
    """What a verified request proved about the app and device that sent it."""

    platform: str  # "ios" | "android"
    app_id: str
    decision: str  # "allow" | "limit"
    key_id: str | None  # App Attest key id (standard base64)
    counter: int | None  # App Attest counter after this assertion
    reasons: tuple[str, ...]  # Play Integrity rules that cost something


def _refused(code: str, message: str, status: int = 401) -> ServiceError:
    return ServiceError(code, message, status)


class InlineVerifier:
    """Verifies the device proof a request carries, against the core verifiers and the store."""

    def __init__(
        self,
        store: Store,
        *,
        apple: AppAttestVerifier | None = None,
        google: PlayIntegrityVerifier | None = None,
        play_replay_window_seconds: int = 900,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if apple is None and google is None:
            raise ValueError("give an AppAttestVerifier, a PlayIntegrityVerifier, or both")
        self.store = store
        self.apple = apple
        self.google = google
        self.play_replay_window = timedelta(seconds=play_replay_window_seconds)
        self._clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> DeviceProof:
        """``headers`` with lower-case names. Raises ``ServiceError`` (status and code set)."""
        try:
            assertion = headers.get(ASSERTION_HEADER.lower())
            if assertion and self.apple is not None:
                return await self._apple(headers.get(KEY_ID_HEADER.lower()), assertion, body)
            token = headers.get(PLAY_INTEGRITY_HEADER.lower())
            if token and self.google is not None:
                return await self._google(token.strip(), body)
        except StoreUnavailableError:
            raise
        except VerificationError as error:
            raise _refused(error.reason, error.message) from error
        raise _refused(Code.TOKEN_MISSING, "the request carries no App Attest or Play proof")

    async def _apple(self, key_id_text: str | None, assertion: str, body: bytes) -> DeviceProof:
        assert self.apple is not None
        if not key_id_text:
            raise _refused(Code.TOKEN_MISSING, f"the {KEY_ID_HEADER} header is missing")
        try:
            key_id = b64_encode(normalize_key_id(key_id_text))
        except EncodingError as exc:
            raise _refused(Reason.APPLE_MALFORMED, f"bad key id: {exc}") from exc
        key = await self.store.get_key(key_id)
        if key is None:
            raise _refused(Code.KEY_UNKNOWN, "no registered App Attest key has this id")
        if key.revoked_at is not None:
            raise _refused(Code.KEY_REVOKED, "this App Attest key was revoked", 403)
        # Apple's assertion steps 1-6: signature over SHA-256(authData || SHA-256(body)),
        # rpIdHash, and a counter above the stored one.
        result = self.apple.verify_assertion(
            assertion.strip(),
            client_data=body,
            public_key=key.public_key,
            previous_counter=key.counter,
            app_id=key.app_id,
        )
        # Two requests racing with the same counter: the store lets exactly one advance it.
        if not await self.store.advance_counter(key_id, result.counter, self._clock()):
            raise _refused(Reason.APPLE_COUNTER_INVALID, "this assertion's counter was used")
        return DeviceProof("ios", key.app_id, "allow", key_id, result.counter, ())

    async def _google(self, token: str, body: bytes) -> DeviceProof:
        assert self.google is not None
        now = self._clock()
        result = await self.google.verify(token, now=now, request_hash=request_hash(body))
        if result.decision is Decision.BLOCK:
            # The first costly rule names the refusal; a token not made for this request (or
            # too old) is an authentication failure, a device or app verdict a refusal.
            code = result.reasons[0] if result.reasons else Code.DECISION_BLOCKED
            status = 401 if code in _NOT_FOR_THIS_REQUEST else 403
            reasons = ", ".join(result.reasons)
            raise _refused(code, f"Play Integrity verdict refused: {reasons}", status)
        token_id = "play:" + b64url_encode(hashlib.sha256(token.encode()).digest())
        if not await self.store.consume_token_id(token_id, now + self.play_replay_window, now):
            raise _refused(Code.TOKEN_CONSUMED, "this Play Integrity token was used before", 409)
        return DeviceProof(
            "android",
            self.google.policy.package_name,
            str(result.decision),
            None,
            None,
            tuple(result.reasons),
        )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_error(send: Send, error: ServiceError) -> None:
    body = json.dumps({"error": {"code": str(error.code), "message": error.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_REASON_LABELS: dict[str, str] = {
    Code.TOKEN_MISSING: "missing",
    Code.TOKEN_CONSUMED: "consumed",
    Code.KEY_UNKNOWN: "unknown_key",
    Code.KEY_REVOKED: "revoked",
    Code.DECISION_BLOCKED: "blocked",
    Code.TOKEN_LIMITED_DECISION: "limited",
    Code.STORE_UNAVAILABLE: "unverifiable",
    Code.REQUEST_TOO_LARGE: "too_large",
    Reason.APPLE_COUNTER_INVALID: "replayed",
}


def _reason_label(code: str) -> str:
    return _REASON_LABELS.get(code, "invalid")


class InlineMiddleware:
    """ASGI middleware for inline mode; ``RoutePolicy.accept_limit`` and ``mode`` apply."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: InlineVerifier,
        routes: RouteSpec | RouteTable | None = None,
        *,
        default: RoutePolicy | None = None,
        mode: Mode | str = Mode.ENFORCE,
        metrics: WebMetrics | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.routes = route_table(routes, default)
        self.mode = Mode(mode)
        self.metrics = metrics if metrics is not None else default_metrics()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = self.routes.match(scope["method"], scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        route, policy = match
        mode = policy.mode or self.mode
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        body, error = await self._read_body(receive)
        proof: DeviceProof | None = None
        if error is None:
            try:
                proof = await self.verifier.verify(headers, body)
            except ServiceError as refused:
                error = refused
        if proof is not None and proof.decision == "limit" and not policy.accept_limit:
            error = _refused(
                Code.TOKEN_LIMITED_DECISION, "this route needs decision 'allow', found 'limit'", 403
            )
        if error is None:
            self.metrics.record(route, mode, "verified", "verified", "allowed")
        else:
            allowed = mode is Mode.MONITOR and error.code != Code.REQUEST_TOO_LARGE
            action = "allowed" if allowed else "refused"
            label = _reason_label(error.code)
            self.metrics.record(route, mode, "unverified", label, action)
            logger.info(
                "device proof unverified on %s: %s (%s); %s in %s mode",
                route,
                label,
                error.code,
                action,
                mode.value,
                extra={"route": route, "reason": label, "code": str(error.code)},
            )
            if not allowed:
                await _send_error(send, error)
                return
            proof = proof if error.code == Code.TOKEN_LIMITED_DECISION else None
        scope.setdefault("state", {})["app_integrity"] = proof
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, ServiceError | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", _refused(
                    Code.REQUEST_TOO_LARGE, f"body over {self.max_body_bytes} bytes", 413
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body we already read, then the real stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
