"""A device's HTTP calls to the integrity service, made by the software devices (public API).

A real app does three things over HTTP: fetch a challenge, register its App Attest key
(iOS, once), and send an assertion or a Play Integrity token before a sensitive request; it
gets back an app token for your API. ``IntegrityClient`` does exactly that with
``SoftwareIPhone`` and ``SoftwareAndroidDevice``, so a backend's tests (CI included) can
obtain genuine app tokens from a running service without a phone::

    with IntegrityClient("http://127.0.0.1:8080") as client:
        phone = SoftwareIPhone("TEAMID.com.example.app", ca=ca)
        registration = client.register_iphone(phone)
        token = client.assert_iphone(phone, registration.key_id, payload={"action": "buy"})
        api.post("/purchases", headers={"X-App-Integrity": token.token})

A refusal (any ``{"error": {"code", "message"}}`` answer) raises ``ServiceRefusal`` carrying
the stable code, so a test can assert ``exc.code == "challenge.consumed"``. To send something a
genuine device would not (a replay, a tampered payload), build the body with the
``*_request`` methods, change it, and send it with ``post_json``.

The wire contract is the service's (``appintegrity.service.schemas``); nothing here imports
the service, so the client works against any deployment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

import httpx

from appintegrity.encoding import b64_encode
from appintegrity.errors import AppIntegrityError
from appintegrity.google.nonce import request_hash
from appintegrity.testing.android import SoftwareAndroidDevice
from appintegrity.testing.ios import Defect, SoftwareIPhone
from appintegrity.tokens.binding import binding_for

UNEXPECTED_RESPONSE = "client.unexpected_response"

CHALLENGES = "/v1/challenges"
REGISTRATIONS = "/v1/registrations"
ASSERTIONS = "/v1/assertions"
DEBUG_EXCHANGE = "/v1/debug/exchange"
TOKENS_VERIFY = "/v1/tokens/verify"


class ServiceRefusal(AppIntegrityError):
    """The service answered with its JSON error: ``code`` is the stable code it sent.

    ``body`` is the whole decoded answer (``decision.blocked`` also carries ``reasons``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Mapping[str, object],
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.args = (f"{status} {code}: {message}",)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def reasons(self) -> tuple[str, ...]:
        """The policy reasons of a ``decision.blocked`` refusal (empty for other codes)."""
        error = self.body.get("error")
        reasons = error.get("reasons") if isinstance(error, Mapping) else None
        if not isinstance(reasons, list):
            return ()
        return tuple(str(reason) for reason in reasons)

    @property
    def client_error(self) -> Mapping[str, object] | None:
        """The ``clientError`` of a ``google.client_error`` refusal: the reported code, its
        ``name``, ``retryable``, ``resolvedBy``, ``remediation`` (None for other codes)."""
        error = self.body.get("error")
        client_error = error.get("clientError") if isinstance(error, Mapping) else None
        return client_error if isinstance(client_error, Mapping) else None


class UnexpectedResponse(AppIntegrityError):
    """The answer was neither the contract's success body nor its JSON error (a proxy's HTML
    page, a wrong URL): the server at ``base_url`` is probably not the integrity service."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(UNEXPECTED_RESPONSE, message)
        self.status = status


@dataclass(frozen=True)
class AppToken:
    """An app token as the service issued it, with what came along with it."""

    token: str
    expires_at: datetime
    decision: str = "allow"
    reasons: tuple[str, ...] = ()
    counter: int | None = None
    debug: bool = False
    payload: str | None = None
    """The exact payload text the assertion covered (assertions only)."""
    body: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return self.token

    @property
    def client_error(self) -> Mapping[str, object] | None:
        """The ``clientError`` of an Android answer to an ``errorCode`` report (else None)."""
        client_error = self.body.get("clientError")
        return client_error if isinstance(client_error, Mapping) else None


@dataclass(frozen=True)
class Registration:
    """An App Attest key the service accepted, and the app token it issued for it."""

    key_id: str
    environment: str
    app_token: AppToken
    body: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)


class IntegrityClient:
    """The HTTP calls an app makes to the integrity service at ``base_url`` (synchronous).

    Pass ``http`` to reuse your own ``httpx.Client`` (its base URL is not used; it is never
    closed here); otherwise the client opens one and ``close()`` closes it.
    """

    def __init__(
        self, base_url: str, *, http: httpx.Client | None = None, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> IntegrityClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------

    def post_json(self, path: str, body: Mapping[str, object] | None = None) -> dict[str, object]:
        """POST ``body`` as JSON; the decoded answer on 2xx, ``ServiceRefusal`` on an error."""
        url = f"{self.base_url}{path}"
        response = self.http.post(url) if body is None else self.http.post(url, json=dict(body))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UnexpectedResponse(
                response.status_code,
                f"POST {path} answered {response.status_code} without a JSON object",
            )
        if response.is_success:
            return answer
        error = answer.get("error")
        if not isinstance(error, dict):
            raise UnexpectedResponse(
                response.status_code,
                f"POST {path} answered {response.status_code} without an 'error' object",
            )
        code, message = error.get("code"), error.get("message")
        retry_after = response.headers.get("retry-after")
        raise ServiceRefusal(
            response.status_code,
            code if isinstance(code, str) else UNEXPECTED_RESPONSE,
            message if isinstance(message, str) else "",
            answer,
            retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
        )

    # -- challenges -------------------------------------------------------------------------

    def challenge(self, purpose: str | None = None, key_id: str | None = None) -> str:
        """A one-time challenge; ``purpose`` is "attestation" or "assertion", and ``key_id``
        binds it to one device key."""
        body: dict[str, object] = {}
        if purpose is not None:
            body["purpose"] = purpose
        if key_id is not None:
            body["keyId"] = key_id
        return _text(self.post_json(CHALLENGES, body), "challenge", CHALLENGES)

    # -- iOS --------------------------------------------------------------------------------

    def registration_request(
        self,
        phone: SoftwareIPhone,
        key_id: str | None = None,
        *,
        challenge: str | None = None,
        defect: Defect | str | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """The body of ``POST /v1/registrations``: a new key (unless ``key_id``) attested
        over a fresh attestation challenge (unless ``challenge``)."""
        key_id = key_id or phone.generate_key()
        challenge = challenge or self.challenge("attestation")
        attestation = phone.attest_key(key_id, challenge, defect=defect, now=now)
        return {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": key_id,
            "challenge": challenge,
            "token": b64_encode(attestation),
        }

    def register_iphone(self, phone: SoftwareIPhone, *, key_id: str | None = None) -> Registration:
        """challenge → attestKey → ``POST /v1/registrations``; makes a key unless given one."""
        answer = self.post_json(REGISTRATIONS, self.registration_request(phone, key_id))
        return Registration(
            key_id=_text(answer, "keyId", REGISTRATIONS),
            environment=_text(answer, "environment", REGISTRATIONS),
            app_token=_app_token(answer, REGISTRATIONS),
            body=answer,
        )

    def ios_assertion_request(
        self,
        phone: SoftwareIPhone,
        key_id: str,
        *,
        payload: Mapping[str, object] | str | None = None,
        challenge: str | None = None,
        limited_use: bool = False,
        defect: Defect | str | None = None,
        bind_to: str | None = None,
    ) -> dict[str, object]:
        """The body of an iOS ``POST /v1/assertions``.

        A mapping ``payload`` (or none) is sent as JSON with a ``challenge`` member added
        (a fresh assertion challenge unless ``challenge``); a string is sent verbatim and must
        carry its challenge itself. The assertion covers exactly the text sent.
        """
        text = self._payload_text(payload, challenge)
        assertion = phone.generate_assertion(key_id, text, defect=defect)
        return _bound(
            {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "payload": text,
                "token": b64_encode(assertion),
                "limitedUse": limited_use,
            },
            bind_to,
        )

    def assert_iphone(
        self,
        phone: SoftwareIPhone,
        key_id: str,
        *,
        payload: Mapping[str, object] | None = None,
        limited_use: bool = False,
        bind_to: str | None = None,
    ) -> AppToken:
        """challenge → generateAssertion over the JSON payload → ``POST /v1/assertions``.

        ``bind_to`` binds the app token to a request value (e.g. the ``Authorization`` header
        the app will send): the service receives only its hash (``binding``)."""
        body = self.ios_assertion_request(
            phone, key_id, payload=payload, limited_use=limited_use, bind_to=bind_to
        )
        return _app_token(self.post_json(ASSERTIONS, body), ASSERTIONS, payload=body["payload"])

    # -- Android ----------------------------------------------------------------------------

    def android_assertion_request(
        self,
        device: SoftwareAndroidDevice,
        *,
        payload: Mapping[str, object] | str | None = None,
        challenge: str | None = None,
        limited_use: bool = False,
        app_id: str | None = None,
        classic: bool = False,
        error_code: int | None = None,
        bind_to: str | None = None,
        **verdict_overrides: object,
    ) -> dict[str, object]:
        """The body of an Android ``POST /v1/assertions``: a Play Integrity token whose
        ``requestHash`` (or, ``classic``, whose nonce) is SHA-256 of the payload text sent.

        ``payload`` works as in ``ios_assertion_request``; ``verdict_overrides`` change the
        device's verdict for this token (``play_protect="HIGH_RISK"``, ``device_labels=None``).
        ``error_code`` sends what an app sends when Play gave it an error instead of a token:
        ``"errorCode"`` in place of ``"token"`` (with ``classic``, ``"requestType": "classic"``:
        the code is an ``IntegrityErrorCode``, not a ``StandardIntegrityErrorCode``).
        """
        text = self._payload_text(payload, challenge)
        if error_code is not None:
            if verdict_overrides:
                raise TypeError("an error_code report carries no token: no verdict overrides")
            report: dict[str, object] = {
                "platform": "android",
                "format": "google-play-integrity",
                "payload": text,
                "errorCode": error_code,
                "limitedUse": limited_use,
            }
            if classic:
                report["requestType"] = "classic"
            if app_id is not None:
                report["appId"] = app_id
            return _bound(report, bind_to)
        binding = request_hash(text)
        # Standard requests bind requestHash; classic ones put the same value in the nonce.
        verdict = device.verdict_payload(
            request_hash=None if classic else binding,
            nonce=binding if classic else None,
            now=None,
            **verdict_overrides,
        )
        token = device.seal(verdict)
        body: dict[str, object] = {
            "platform": "android",
            "format": "google-play-integrity",
            "payload": text,
            "token": token,
            "limitedUse": limited_use,
        }
        if app_id is not None:
            body["appId"] = app_id
        return _bound(body, bind_to)

    def assert_android(
        self,
        device: SoftwareAndroidDevice,
        *,
        payload: Mapping[str, object] | None = None,
        limited_use: bool = False,
        app_id: str | None = None,
        error_code: int | None = None,
        bind_to: str | None = None,
        **verdict_overrides: object,
    ) -> AppToken:
        """challenge → a standard Play Integrity request bound to the payload →
        ``POST /v1/assertions``. A ``limit`` decision still returns a token (``decision``
        says so); ``block`` raises ``ServiceRefusal`` with code ``decision.blocked``.

        ``error_code`` reports that standard request's failure instead (``-8``: too many
        requests): a ``limit`` answer returns a token whose ``client_error`` says what Play
        reported; a ``block`` raises ``ServiceRefusal`` with code ``google.client_error``,
        its ``client_error`` and, for retryable codes, ``retry_after``."""
        body = self.android_assertion_request(
            device,
            payload=payload,
            challenge=None,
            limited_use=limited_use,
            app_id=app_id,
            classic=False,
            error_code=error_code,
            bind_to=bind_to,
            **verdict_overrides,
        )
        return _app_token(self.post_json(ASSERTIONS, body), ASSERTIONS, payload=body["payload"])

    # -- tokens -----------------------------------------------------------------------------

    def exchange_debug_token(
        self, app_id: str, secret: str, *, bind_to: str | None = None
    ) -> AppToken:
        """A debug secret (``appintegrity debug-token create``) for an app token marked debug."""
        body = _bound({"appId": app_id, "debugToken": secret}, bind_to)
        return _app_token(self.post_json(DEBUG_EXCHANGE, body), DEBUG_EXCHANGE)

    def verify_token(self, token: str | AppToken, consume: bool = False) -> dict[str, object]:
        """The token's claims if the service accepts it; ``consume`` uses up a limited-use
        token (a second consumption is refused with ``token.consumed``)."""
        text = token.token if isinstance(token, AppToken) else token
        answer = self.post_json(TOKENS_VERIFY, {"token": text, "consume": consume})
        claims = answer.get("claims")
        if answer.get("valid") is not True or not isinstance(claims, dict):
            raise UnexpectedResponse(200, f"{TOKENS_VERIFY} answered without valid claims")
        return claims

    # -- helpers ----------------------------------------------------------------------------

    def _payload_text(
        self, payload: Mapping[str, object] | str | None, challenge: str | None
    ) -> str:
        if isinstance(payload, str):
            return payload
        # The challenge sits inside the signed payload: the service consumes it once, so
        # the same assertion can never be accepted twice.
        document = {**(payload or {}), "challenge": challenge or self.challenge("assertion")}
        return json.dumps(document)


def _bound(body: dict[str, object], bind_to: str | None) -> dict[str, object]:
    """Add the token binding: the hash of the bound value, never the value itself."""
    if bind_to is not None:
        body["binding"] = binding_for(bind_to)
    return body


def _text(answer: Mapping[str, object], name: str, path: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str):
        raise UnexpectedResponse(200, f"{path} answered without a string {name!r}")
    return value


def _app_token(answer: Mapping[str, object], path: str, *, payload: object = None) -> AppToken:
    expires_text = _text(answer, "expiresAt", path)
    try:
        expires_at = datetime.fromisoformat(expires_text)
    except ValueError:
        raise UnexpectedResponse(200, f"{path} answered an unreadable expiresAt") from None
    reasons = answer.get("reasons")
    counter = answer.get("counter")
    decision = answer.get("decision", "allow")
    return AppToken(
        token=_text(answer, "appToken", path),
        expires_at=expires_at,
        decision=decision if isinstance(decision, str) else "allow",
        reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
        counter=counter if isinstance(counter, int) and not isinstance(counter, bool) else None,
        debug=answer.get("debug") is True,
        payload=payload if isinstance(payload, str) else None,
        body=answer,
    )


__all__ = [
    "AppToken",
    "IntegrityClient",
    "Registration",
    "ServiceRefusal",
    "UnexpectedResponse",
]
