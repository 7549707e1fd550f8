"""Inline mode: a backend that embeds the library verifies device proofs itself, no service.

Each protected request carries either an App Attest assertion over its body
(``X-App-Attest-Key-Id`` + ``X-App-Attest-Assertion``, the key registered earlier in the
shared store) or a Play Integrity token whose ``requestHash`` is base64url(SHA-256(body))
(``X-Play-Integrity-Token``). ``InlineVerifier`` checks them with the core verifiers and the
store; ``InlineProtector`` adds what every adapter shares (route policy, monitor or enforce,
metrics, the JSON error); ``InlineMiddleware`` does it in front of an ASGI app and puts the
``DeviceProof`` on ``request.state.app_integrity``. The WSGI, Flask and Django adapters
(``appintegrity.web.wsgi.InlineWSGIMiddleware``, ``AppIntegrity(app, InlineProtector(...))``,
``APP_INTEGRITY = {"PROTECTOR": ...}``) call ``InlineProtector.check`` from blocking code.

Replays are refused through the store: an assertion's counter must advance atomically, and a
Play token is consumed once (by its hash) while it could still pass the freshness check.
``InlineVerifier.register`` stores an App Attest key without the service.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from appintegrity.apple import AppAttestVerifier
from appintegrity.encoding import (
    EncodingError,
    b64_encode,
    b64decode_lenient,
    b64url_decode_strict,
    b64url_encode,
    normalize_key_id,
)
from appintegrity.errors import (
    Code,
    ConfigError,
    GoogleVerificationError,
    Reason,
    ServiceError,
    StoreUnavailableError,
    VerificationError,
)
from appintegrity.google import Decision, PlayIntegrityVerifier
from appintegrity.google.nonce import request_hash
from appintegrity.google.policy import PolicyResult
from appintegrity.google.token import read_jwe_header
from appintegrity.store.base import DeviceKey, Store
from appintegrity.web.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    route_path,
    send_refusal,
)
from appintegrity.web.background import BackgroundLoop
from appintegrity.web.metrics import WebMetrics, default_metrics
from appintegrity.web.policy import Mode, RoutePolicy, RouteSpec, RouteTable, route_table
from appintegrity.web.protector import error_body

KEY_ID_HEADER = "X-App-Attest-Key-Id"
ASSERTION_HEADER = "X-App-Attest-Assertion"
PLAY_INTEGRITY_HEADER = "X-Play-Integrity-Token"
INLINE_HEADERS = (KEY_ID_HEADER, ASSERTION_HEADER, PLAY_INTEGRITY_HEADER)
MAX_BODY_BYTES = 1 << 20
logger = logging.getLogger("appintegrity.web.inline")
T = TypeVar("T")
# Google's decode API failing on this server's side (its reach, quota, credentials, project
# link) or refusing to read a token: the status and the fixed message the client gets; Google's
# and google-auth's own words go to the log. The service answers the same
# (appintegrity.service.errors, not imported here: it pulls in FastAPI).
_GOOGLE_API_FAILURES: dict[str, tuple[int, str]] = {
    Reason.GOOGLE_API_UNAVAILABLE: (
        503,
        "Google's Play Integrity API cannot be reached; try later with a new token",
    ),
    Reason.GOOGLE_API_QUOTA_EXCEEDED: (
        429,
        "this server's Play Integrity quota is used up; try later with a new token",
    ),
    Reason.GOOGLE_API_UNAUTHORIZED: (
        502,
        "this server's Google credentials were refused; try later",
    ),
    Reason.GOOGLE_API_PERMISSION_DENIED: (
        502,
        "this server may not decode this app's Play Integrity tokens; try later",
    ),
    Reason.GOOGLE_API_BAD_REQUEST: (400, "Google could not read this Play Integrity token"),
}
RETRY_AFTER_SECONDS = 5  # on a 503: the store or Google's API could not answer
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


def _refused(
    code: str, message: str, status: int = 401, retry_after: int | None = None
) -> ServiceError:
    return ServiceError(code, message, status, retry_after)


def _refusal_for(error: VerificationError) -> ServiceError:
    """A core verifier's error as the request's refusal (see ``_GOOGLE_API_FAILURES``)."""
    failure = _GOOGLE_API_FAILURES.get(error.reason)
    if failure is None:
        return _refused(error.reason, error.message)
    status, message = failure
    logger.warning(
        "Play Integrity decode API failure %s: %s",
        error.reason,
        error.message,
        extra={"code": str(error.reason)},
    )
    return _refused(error.reason, message, status, RETRY_AFTER_SECONDS if status == 503 else None)


class InlineVerifier:
    """Verifies the device proof a request carries, against the core verifiers and the store.

    ``verify`` is awaited on the caller's loop (ASGI). ``verify_blocking`` is for blocking code
    (WSGI, Flask, Django): it runs ``verify`` on this verifier's own background loop, so the
    store it drives must not be tied to another loop (SQLite is not), or use one store per side.
    Google's decode API (a ``PlayIntegrityVerifier`` with a decoder) is always called on that
    background loop, whichever loop awaits ``verify``: the decoder's HTTP client belongs to the
    loop it first ran on. ``timeout`` bounds a blocking check and a decode; past it the request
    fails closed (503).
    """

    def __init__(
        self,
        store: Store,
        *,
        apple: AppAttestVerifier | None = None,
        google: PlayIntegrityVerifier | None = None,
        play_replay_window_seconds: int = 900,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = 10.0,
    ) -> None:
        if apple is None and google is None:
            raise ValueError("give an AppAttestVerifier, a PlayIntegrityVerifier, or both")
        self.store = store
        self.apple = apple
        self.google = google
        self.play_replay_window = timedelta(seconds=play_replay_window_seconds)
        self._clock = clock
        self.timeout = timeout
        self._background = BackgroundLoop("appintegrity-inline")

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
            raise _refusal_for(error) from error
        raise _refused(Code.TOKEN_MISSING, "the request carries no App Attest or Play proof")

    def verify_blocking(self, headers: Mapping[str, str], body: bytes) -> DeviceProof:
        """``verify`` from blocking code, on this verifier's background loop."""
        return self._blocking(self.verify(headers, body), "the device proof could not be checked")

    def _blocking(self, work: Coroutine[Any, Any, T], what: str) -> T:
        """``work`` on the background loop within ``timeout``; past it, fail closed (503)."""
        try:
            return self._background.run(work, self.timeout)
        except TimeoutError as exc:
            raise StoreUnavailableError(f"{what} in time") from exc

    async def register(
        self,
        attestation: bytes | str,
        key_id: str,
        challenge: str | bytes,
        *,
        now: datetime | None = None,
    ) -> DeviceKey:
        """Verify an App Attest attestation and store its key, for inline assertions to find.

        The service's registration without the service. ``attestation``: the attestation
        object (bytes, or base64 text) from ``attestKey``; ``key_id``: the key's id in any
        spelling (standard or URL-safe base64, hex); ``challenge``: the value this server gave
        the app for this attestation (the app attests SHA-256 of it). Issuing that challenge,
        letting it expire and accepting it once is the caller's job.

        The key is stored under its canonical id, standard base64 of its 32 bytes (what
        ``verify`` looks up, whatever spelling a request's header uses), with counter 0, the
        environment and app id Apple's steps found, and the attestation's receipt as sent
        (unvalidated; inline mode uses no risk metric). Returns the stored ``DeviceKey``.
        Raises ``ServiceError``: 400 ``request.invalid`` (not a key id), 401 with Apple's
        reason (``apple.nonce_mismatch``, ...), 409 ``key.exists``, 503 ``store.unavailable``.
        """
        if self.apple is None:
            raise ValueError("register needs an AppAttestVerifier")
        try:
            canonical = b64_encode(normalize_key_id(key_id))
        except EncodingError as exc:
            raise _refused(
                Code.REQUEST_INVALID, f"not a 32-byte key id in base64 or hex: {exc}", 400
            ) from exc
        moment = now if now is not None else self._clock()
        try:
            attested = self.apple.verify_attestation(
                attestation, key_id=canonical, challenge=challenge, now=moment
            )
        except VerificationError as error:
            raise _refusal_for(error) from error
        record = DeviceKey.registered(
            attested, moment, receipt=attested.receipt or None, risk_metric=None
        )
        # Insert-if-absent: a second attestation of a key must not reset its counter.
        if not await self.store.add_key(record):
            raise _refused(Code.KEY_EXISTS, "this App Attest key is already registered", 409)
        return record

    def register_blocking(
        self,
        attestation: bytes | str,
        key_id: str,
        challenge: str | bytes,
        *,
        now: datetime | None = None,
    ) -> DeviceKey:
        """``register`` from blocking code, on this verifier's background loop."""
        return self._blocking(
            self.register(attestation, key_id, challenge, now=now), "the key could not be stored"
        )

    def close(self) -> None:
        """Stop the background loop (``verify_blocking``'s and the decoder's); the store stays
        open. Call it when done with the verifier."""
        self._background.close()

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
        # A development key (Xcode build) in a store shared with a development setup must not
        # pass a production verifier, nor the other way round.
        if key.environment != self.apple.environment.value:
            raise _refused(
                Reason.APPLE_ENVIRONMENT_MISMATCH,
                f"this key was attested in {key.environment}, this API expects"
                f" {self.apple.environment.value}",
            )
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
        by_google = self.google.decoder is not None
        if by_google:
            # Each decode is a call against the quota, and Google answers a token's verdict
            # once (decoded again, it comes back cleared, as if the app were unknown). So what
            # cannot be a token is refused here, and a token is consumed before Google is
            # asked: a replay is token.consumed without a call, and a token is spent even when
            # what follows refuses it (the app asks Play for a new one to retry).
            _require_compact_jwe(token)
            await self._consume(token, now)
            result = await self._decode(token, now, request_hash(body))
        else:
            result = await self.google.verify(token, now=now, request_hash=request_hash(body))
        if result.decision is Decision.BLOCK:
            # The first costly rule names the refusal; a token not made for this request (or
            # too old) is an authentication failure, a device or app verdict a refusal.
            code = result.reasons[0] if result.reasons else Code.DECISION_BLOCKED
            status = 401 if code in _NOT_FOR_THIS_REQUEST else 403
            reasons = ", ".join(result.reasons)
            raise _refused(code, f"Play Integrity verdict refused: {reasons}", status)
        if not by_google:
            # Read with the local keys: consumed only once it passed, so a refused request
            # does not burn a token that was good for another.
            await self._consume(token, now)
        return DeviceProof(
            "android",
            self.google.policy.package_name,
            str(result.decision),
            None,
            None,
            tuple(result.reasons),
        )

    async def _consume(self, token: str, now: datetime) -> None:
        assert self.google is not None
        # Remembered at least as long as the token could still pass the freshness check
        # (issued up to the skew ahead of us, then good for max_age), whatever the window.
        policy = self.google.policy
        fresh_for = timedelta(seconds=policy.max_age_seconds + policy.clock_skew_seconds)
        expires = now + max(self.play_replay_window, fresh_for)
        if not await self.store.consume_token_id(_play_token_id(token), expires, now):
            raise _refused(Code.TOKEN_CONSUMED, "this Play Integrity token was used before", 409)

    async def _decode(self, token: str, now: datetime, hash_of_body: str) -> PolicyResult:
        """Google's decode API and the policy, on the background loop (see the class)."""
        assert self.google is not None
        checked = self.google.verify(token, now=now, request_hash=hash_of_body)
        try:
            return await self._background.run_async(checked, self.timeout)
        except TimeoutError as exc:
            raise GoogleVerificationError(
                Reason.GOOGLE_API_UNAVAILABLE,
                f"decodeIntegrityToken gave no answer within {self.timeout} s",
            ) from exc


def _require_compact_jwe(token: str) -> None:
    """Refuse (``google.malformed``) what is not five base64url segments under a JWE header
    naming ``alg`` and ``enc``: Google's API would refuse it too, after a call."""
    header = read_jwe_header(token)  # length, ASCII, five parts, a JSON object header
    if not isinstance(header.get("alg"), str) or not isinstance(header.get("enc"), str):
        raise GoogleVerificationError(
            Reason.GOOGLE_MALFORMED, "the token's JWE header names no alg and enc"
        )
    for segment in token.split("."):  # ASCII: read_jwe_header checked it
        try:
            if not segment:
                raise EncodingError("an empty segment")
            b64url_decode_strict(segment.encode("ascii"))
        except EncodingError as exc:
            raise GoogleVerificationError(
                Reason.GOOGLE_MALFORMED, "a segment of the token is not base64url"
            ) from exc


def _play_token_id(token: str) -> str:
    """The key a Play token is consumed under: SHA-256 of its decoded segments, not its text.

    A base64url segment whose length is not a multiple of four has spare bits in its last
    character that decoders ignore (the 16-byte GCM tag always does), so one token has many
    spellings; keyed by its text, each respelling of a used token passed as unused.
    """
    digest = hashlib.sha256()
    for segment in token.split("."):
        try:
            raw = b"d" + b64decode_lenient(segment)
        except EncodingError:  # a token only Google's decoder reads: keep its text
            raw = b"t" + segment.encode("utf-8", "surrogatepass")
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return "play:" + b64url_encode(digest.digest())


_REASON_LABELS: dict[str, str] = {
    Code.TOKEN_MISSING: "missing",
    Code.TOKEN_CONSUMED: "consumed",
    Code.KEY_UNKNOWN: "unknown_key",
    Code.KEY_REVOKED: "revoked",
    Code.DECISION_BLOCKED: "blocked",
    Code.TOKEN_LIMITED_DECISION: "limited",
    Code.STORE_UNAVAILABLE: "unverifiable",
    # Google's API could not be asked (this server's reach, quota or credentials): the proof
    # was not judged. A token Google refused to read (api_bad_request) is "invalid".
    Reason.GOOGLE_API_UNAVAILABLE: "unverifiable",
    Reason.GOOGLE_API_QUOTA_EXCEEDED: "unverifiable",
    Reason.GOOGLE_API_UNAUTHORIZED: "unverifiable",
    Reason.GOOGLE_API_PERMISSION_DENIED: "unverifiable",
    Code.REQUEST_INVALID: "unreadable",
    Code.REQUEST_TOO_LARGE: "too_large",
    Reason.APPLE_COUNTER_INVALID: "replayed",
}


def _reason_label(code: str) -> str:
    return _REASON_LABELS.get(code, "invalid")


class InlineVerdict(NamedTuple):
    """What inline mode concluded for one request (the counterpart of ``Verdict``).

    ``allowed`` is what the adapter does; ``error`` is what enforcement answers (or would
    answer, in monitor mode). ``proof`` is what the handler sees: set when the proof verified
    (also for a ``limit`` decision passed in monitor mode), None otherwise.
    """

    allowed: bool
    proof: DeviceProof | None
    error: ServiceError | None = None

    @property
    def status(self) -> int:
        return self.error.status if self.error is not None else 200

    def body(self) -> bytes:
        return error_body(self.error)

    def headers(self) -> list[tuple[str, str]]:
        extra = [("content-type", "application/json")]
        if self.error is not None and self.error.status == 503:
            extra.append(("retry-after", str(self.error.retry_after or RETRY_AFTER_SECONDS)))
        return extra


def proof_headers(get: Callable[[str], str | None]) -> dict[str, str]:
    """The inline headers a request carries, lower-cased as ``InlineVerifier.verify`` wants;
    ``get`` looks one header up by name (case-insensitively, as every framework does)."""
    found: dict[str, str] = {}
    for name in INLINE_HEADERS:
        value = get(name)
        if value is not None:
            found[name.lower()] = value
    return found


class InlineProtector:
    """Inline mode's framework-neutral core: proof in, ``InlineVerdict`` out.

    ``RoutePolicy.accept_limit`` and ``RoutePolicy.mode`` apply; every check is counted in
    ``metrics`` and logged (route, reason, code; never a proof) in both modes, and only
    ``enforce`` refuses. A body over ``max_body_bytes`` is refused in both modes: it cannot be
    hashed without reading it all.
    """

    def __init__(
        self,
        verifier: InlineVerifier,
        *,
        mode: Mode | str = Mode.ENFORCE,
        metrics: WebMetrics | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.verifier = verifier
        self.mode = Mode(mode)
        self.metrics = metrics if metrics is not None else default_metrics()
        self.max_body_bytes = max_body_bytes

    def validate(self, policy: RoutePolicy) -> None:
        """Start-up check, as ``Protector.validate``: refuse options inline mode cannot honour.

        Every inline proof is single-use already (an assertion's counter, a consumed Play
        token) and there are no debug proofs, so ``require_limited_use`` and ``refuse_debug``
        hold by construction. An optional proof or a header binding cannot be honoured: a
        route configured so must fail at start-up, not pass requests silently.
        """
        if not policy.require_token:
            raise ConfigError("inline mode cannot make the device proof optional on a route")
        if policy.binding_header is not None:
            raise ConfigError(
                "inline mode has no app token to bind: the device proof signs the request body"
            )

    async def check_async(
        self, headers: Mapping[str, str], body: bytes, policy: RoutePolicy, *, route: str
    ) -> InlineVerdict:
        """Check one request on the caller's loop (ASGI); ``headers`` lower-cased."""
        try:
            proof = await self.verifier.verify(headers, body)
        except ServiceError as error:
            return self.conclude(route, policy, None, error)
        return self.conclude(route, policy, proof, None)

    def check(
        self, headers: Mapping[str, str], body: bytes, policy: RoutePolicy, *, route: str
    ) -> InlineVerdict:
        """Check one request from blocking code (WSGI, Flask, Django); ``headers`` lower-cased."""
        try:
            proof = self.verifier.verify_blocking(headers, body)
        except ServiceError as error:
            return self.conclude(route, policy, None, error)
        return self.conclude(route, policy, proof, None)

    def too_large(self, policy: RoutePolicy, *, route: str) -> InlineVerdict:
        """The verdict for a body over ``max_body_bytes`` (413, in both modes)."""
        error = _refused(Code.REQUEST_TOO_LARGE, f"body over {self.max_body_bytes} bytes", 413)
        return self.conclude(route, policy, None, error)

    def unreadable(self, policy: RoutePolicy, *, route: str, message: str) -> InlineVerdict:
        """The verdict for a body something read before the check and did not keep (400
        ``request.invalid``; a deployment error: ``message`` says which order fixes it)."""
        logger.warning("the body of a request to %s was gone before its check: %s", route, message)
        return self.conclude(route, policy, None, _refused(Code.REQUEST_INVALID, message, 400))

    def conclude(
        self,
        route: str,
        policy: RoutePolicy,
        proof: DeviceProof | None,
        error: ServiceError | None,
    ) -> InlineVerdict:
        mode = policy.mode or self.mode
        if proof is not None and proof.decision == "limit" and not policy.accept_limit:
            error = _refused(
                Code.TOKEN_LIMITED_DECISION, "this route needs decision 'allow', found 'limit'", 403
            )
        if error is None:
            self.metrics.record(route, mode, "verified", "verified", "allowed")
            return InlineVerdict(True, proof)
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
            return InlineVerdict(False, None, error)
        # Monitor mode: the handler sees a proof only if it verified (a 'limit' decision).
        return InlineVerdict(
            True, proof if error.code == Code.TOKEN_LIMITED_DECISION else None, error
        )


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
        self.protector = InlineProtector(
            verifier, mode=mode, metrics=metrics, max_body_bytes=max_body_bytes
        )
        self.routes = route_table(routes, default, self.protector.validate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = self.routes.match(scope["method"], route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        route, policy = match
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        body = await self._read_body(receive)
        if body is None:
            verdict = self.protector.too_large(policy, route=route)
            body = b""
        else:
            verdict = await self.protector.check_async(headers, body, policy, route=route)
        if not verdict.allowed:
            await send_refusal(send, verdict)
            return
        scope.setdefault("state", {})["app_integrity"] = verdict.proof
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it grows past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.protector.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


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
