"""Review findings on inline mode (second round): each test failed before its fix.

Google's decode API is the local fake (real HTTP on loopback); the frameworks are driven by
their own test clients.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.test.client import encode_multipart
from django.urls import path
from django_support import configure_django
from flask import Flask, g, request
from inline_support import ANDROID_APP, BODY, IOS_APP, Rig
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import TestResponse

from appintegrity.encoding import b64_encode
from appintegrity.errors import ServiceError
from appintegrity.google import PlayIntegrityPolicy, PlayIntegrityVerifier
from appintegrity.google.decoder import GoogleApiDecoder
from appintegrity.google.nonce import request_hash
from appintegrity.store import open_store
from appintegrity.testing.android import SoftwareAndroidDevice
from appintegrity.testing.fake_google import FakeGoogleServer
from appintegrity.web import Mode, RoutePolicy, WebMetrics
from appintegrity.web.flask import AppIntegrity
from appintegrity.web.inline import (
    ASSERTION_HEADER,
    KEY_ID_HEADER,
    PLAY_INTEGRITY_HEADER,
    DeviceProof,
    InlineMiddleware,
    InlineVerifier,
)

configure_django(__name__)

_SERVICE_ACCOUNT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google() -> Iterator[FakeGoogleServer]:
    with FakeGoogleServer() as server:
        yield server


class GoogleRig:
    """An inline verifier that reads Play tokens through Google's decode API (the fake)."""

    def __init__(self, tmp_path: Path, google: FakeGoogleServer) -> None:
        self.google = google
        self.device = SoftwareAndroidDevice(ANDROID_APP)
        google.register(self.device)
        decoder = GoogleApiDecoder(
            service_account_info=google.make_service_account(private_key=_SERVICE_ACCOUNT_KEY),
            base_url=google.url,
            retries=0,
            timeout=5.0,
        )
        policy = PlayIntegrityPolicy(
            package_name=ANDROID_APP, certificate_digests=(self.device.certificate_digest,)
        )
        self.store = open_store(f"sqlite:///{tmp_path / 'google.db'}")
        self.verifier = InlineVerifier(
            self.store, google=PlayIntegrityVerifier(policy, decoder=decoder)
        )
        self.metrics = WebMetrics(CollectorRegistry())

    def app(self, mode: Mode = Mode.ENFORCE) -> Starlette:
        async def handler(request: Request) -> JSONResponse:
            proof = getattr(request.state, "app_integrity", None)
            return JSONResponse({"platform": proof.platform if proof else None})

        app = Starlette(routes=[Route("/buy", handler, methods=["POST"])])
        app.add_middleware(
            InlineMiddleware,
            verifier=self.verifier,
            routes={"/buy": RoutePolicy()},
            mode=mode,
            metrics=self.metrics,
        )
        return app

    def token(self, body: bytes = BODY) -> str:
        return self.device.request_integrity_token(request_hash=request_hash(body))

    def close(self) -> None:
        self.verifier.close()
        asyncio.run(self.store.close())


@pytest.fixture
def play(tmp_path: Path, google: FakeGoogleServer) -> Iterator[GoogleRig]:
    r = GoogleRig(tmp_path, google)
    yield r
    r.close()


# -- 1. Google's decode API failing on the server's side ---------------------------------------

GOOGLE_FAULTS = [
    # (name, what Google does, status, code, metrics reason)
    ("unavailable", lambda g: g.fail_next(503), 503, "google.api_unavailable", "unverifiable"),
    ("quota", lambda g: g.fail_next(429), 429, "google.api_quota_exceeded", "unverifiable"),
    (
        "permission",
        lambda g: g.fail_next(403),
        502,
        "google.api_permission_denied",
        "unverifiable",
    ),
    (
        "credentials",
        lambda g: g.fail_next_token(400),
        502,
        "google.api_unauthorized",
        "unverifiable",
    ),
    ("bad_request", lambda g: g.fail_next(400), 400, "google.api_bad_request", "invalid"),
]


@pytest.mark.parametrize(
    ("fault", "status", "code", "reason"),
    [case[1:] for case in GOOGLE_FAULTS],
    ids=[case[0] for case in GOOGLE_FAULTS],
)
def test_google_api_failure_answers_its_own_status_with_a_fixed_message(
    play: GoogleRig,
    fault: Callable[[FakeGoogleServer], None],
    status: int,
    code: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault(play.google)
    with caplog.at_level(logging.WARNING, logger="appintegrity.web.inline"):
        response = TestClient(play.app()).post(
            "/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: play.token()}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    # Google's and google-auth's words stay in the server's log.
    assert "planned failure" not in error["message"] and "invalid_grant" not in error["message"]
    assert any(
        "planned failure" in record.getMessage() or "invalid_grant" in record.getMessage()
        for record in caplog.records
    )
    assert response.headers.get("retry-after") == ("5" if status == 503 else None)
    assert play.metrics.count(route="/buy", reason=reason, action="refused") == 1


def test_google_outage_in_monitor_mode_passes_and_is_counted_unverifiable(
    play: GoogleRig,
) -> None:
    play.google.fail_next(503)
    response = TestClient(play.app(Mode.MONITOR)).post(
        "/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: play.token()}
    )
    assert (response.status_code, response.json()) == (200, {"platform": None})
    assert play.metrics.count(route="/buy", reason="unverifiable", action="allowed") == 1
    assert play.metrics.count(route="/buy", reason="invalid") == 0


# -- 3. the decoder's event loop ------------------------------------------------------------


def test_decode_api_works_when_each_request_runs_on_a_new_event_loop(play: GoogleRig) -> None:
    # Without `with`, Starlette's TestClient runs each request on an event loop of its own;
    # the decoder's HTTP client used to stay bound to the first one (the second request: 500).
    client = TestClient(play.app(), raise_server_exceptions=False)
    for _ in range(3):
        response = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: play.token()})
        assert (response.status_code, response.json()) == (200, {"platform": "android"})
    # And from asyncio.run, one loop per call, as a script or a worker would.
    for _ in range(2):
        headers = {PLAY_INTEGRITY_HEADER.lower(): play.token()}
        assert asyncio.run(play.verifier.verify(headers, BODY)).platform == "android"


# -- 4. replays and junk on the decode-API path --------------------------------------------


def test_replayed_play_token_is_consumed_without_asking_google_again(play: GoogleRig) -> None:
    token = play.token()
    with TestClient(play.app()) as client:
        first = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
        assert first.status_code == 200
        again = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "token.consumed"
    assert play.google.decode_requests == 1
    assert play.metrics.count(route="/buy", reason="consumed", action="refused") == 1


def test_respelled_replay_is_consumed_without_asking_google_again(play: GoogleRig) -> None:
    token = play.token()
    *head, tag = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = ".".join([*head, tag[:-1] + alphabet[alphabet.index(tag[-1]) ^ 1]])
    with TestClient(play.app()) as client:
        assert client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token}).is_success
        again = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: respelled})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "token.consumed")
    assert play.google.decode_requests == 1


def _b64url_json(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


_HEADER = _b64url_json({"alg": "A256KW", "enc": "A256GCM"})
NOT_A_JWE = [
    "junk",
    "a.b.c",  # a JWS, not a JWE
    "a.b.c.d.e",  # five parts, the header is not JSON
    f"{_b64url_json(['alg'])}.AAAA.AAAA.AAAA.AAAA",  # the header is not an object
    f"{_b64url_json({'alg': 'A256KW'})}.AAAA.AAAA.AAAA.AAAA",  # no enc
    f"{_HEADER}.AAAA.AAAA.AA!A.AAAA",  # not base64url
    f"{_HEADER}.AAAA.AAAA..AAAA",  # an empty ciphertext
    f"{_HEADER}.AAAA.AAAA.AAAAA.AAAA",  # an impossible base64 length
    f"{_HEADER}.AAAA.AAAA.AAAA.AAAA.AAAA",  # six parts
]


@pytest.mark.parametrize("token", NOT_A_JWE)
def test_token_that_is_not_a_compact_jwe_is_refused_without_asking_google(
    play: GoogleRig, token: str
) -> None:
    with TestClient(play.app()) as client:
        response = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
        assert (response.status_code, response.json()["error"]["code"]) == (
            401,
            "google.malformed",
        )
        # Refused before anything was recorded: the same text is refused the same way again.
        again = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
        assert again.json()["error"]["code"] == "google.malformed"
    assert play.google.decode_requests == 0


def test_token_google_could_not_be_asked_about_is_spent(play: GoogleRig) -> None:
    # A token is consumed before Google is asked (Google answers a token's verdict once): a
    # token refused because Google was down cannot pass later; the app asks for a new one.
    token = play.token()
    play.google.fail_next(503)
    with TestClient(play.app()) as client:
        down = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
        assert down.status_code == 503
        again = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: token})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "token.consumed")
        fresh = client.post("/buy", content=BODY, headers={PLAY_INTEGRITY_HEADER: play.token()})
        assert fresh.status_code == 200
    assert play.google.decode_requests == 2


# -- 5. registering an App Attest key without the service ------------------------------------


def _url_spelling(key_id: str) -> str:
    return base64.urlsafe_b64encode(base64.b64decode(key_id)).decode().rstrip("=")


def _verify(verifier: InlineVerifier, key_id: str, assertion: bytes, body: bytes) -> DeviceProof:
    headers = {KEY_ID_HEADER.lower(): key_id, ASSERTION_HEADER.lower(): b64_encode(assertion)}
    return asyncio.run(verifier.verify(headers, body))


def test_register_stores_the_key_under_its_canonical_id_whatever_its_spelling(rig: Rig) -> None:
    key_id = rig.phone.generate_key()
    spelled = _url_spelling(key_id)  # what some clients send
    attestation = rig.phone.attest_key(spelled, "challenge-1")
    stored = asyncio.run(rig.verifier.register(attestation, spelled, "challenge-1"))
    assert (stored.key_id, stored.app_id, stored.counter) == (key_id, IOS_APP, 0)
    assert stored.public_key == rig.phone.public_key(key_id)
    found = asyncio.run(rig.store.get_key(key_id))
    assert found is not None and found.environment == "production"
    # The app keeps sending its own spelling: the assertion verifies against the stored key.
    proof = _verify(rig.verifier, spelled, rig.phone.generate_assertion(key_id, BODY), BODY)
    assert (proof.platform, proof.key_id, proof.counter) == ("ios", key_id, 1)


def test_register_refuses_a_key_registered_before(rig: Rig) -> None:
    key_id = rig.phone.generate_key()
    asyncio.run(rig.verifier.register(rig.phone.attest_key(key_id, "c-1"), key_id, "c-1"))
    _verify(rig.verifier, key_id, rig.phone.generate_assertion(key_id, BODY), BODY)
    with pytest.raises(ServiceError) as caught:
        asyncio.run(
            rig.verifier.register(rig.phone.attest_key(key_id, "c-2"), _url_spelling(key_id), "c-2")
        )
    assert (caught.value.code, caught.value.status) == ("key.exists", 409)
    stored = asyncio.run(rig.store.get_key(key_id))
    assert stored is not None and stored.counter == 1  # not reset by the second attestation


def test_register_refuses_an_attestation_for_another_challenge(rig: Rig) -> None:
    key_id = rig.phone.generate_key()
    with pytest.raises(ServiceError) as caught:
        asyncio.run(rig.verifier.register(rig.phone.attest_key(key_id, "c-1"), key_id, "c-2"))
    assert (caught.value.code, caught.value.status) == ("apple.nonce_mismatch", 401)
    assert asyncio.run(rig.store.get_key(key_id)) is None


def test_register_refuses_a_key_id_that_is_not_one(rig: Rig) -> None:
    key_id = rig.phone.generate_key()
    with pytest.raises(ServiceError) as caught:
        asyncio.run(rig.verifier.register(rig.phone.attest_key(key_id, "c"), "not-a-key", "c"))
    assert (caught.value.code, caught.value.status) == ("request.invalid", 400)


def test_register_blocking_serves_a_flask_registration_view(rig: Rig) -> None:
    app = Flask(__name__)

    @app.post("/register")
    def register() -> tuple[dict[str, object], int]:
        given = request.get_json()
        try:
            stored = rig.verifier.register_blocking(
                base64.b64decode(given["attestation"]), given["keyId"], given["challenge"]
            )
        except ServiceError as error:
            return {"error": {"code": str(error.code)}}, error.status
        return {"keyId": stored.key_id}, 201

    key_id = rig.phone.generate_key()
    payload = {
        "attestation": b64_encode(rig.phone.attest_key(key_id, "c")),
        "keyId": _url_spelling(key_id),
        "challenge": "c",
    }
    client = app.test_client()
    created = client.post("/register", json=payload)
    assert (created.status_code, created.get_json()) == (201, {"keyId": key_id})
    again = client.post("/register", json=payload)
    assert (again.status_code, again.get_json()) == (409, {"error": {"code": "key.exists"}})


# -- 2. a body read before the check ------------------------------------------------------


def upload_view(request: HttpRequest) -> HttpResponse:
    proof = getattr(request, "app_integrity", None)
    return JsonResponse(
        {"platform": proof.platform if proof else None, "files": sorted(request.FILES)}
    )


urlpatterns = [path("upload", upload_view)]
CSRF_SECRET = "A" * 32  # a well-formed CSRF secret; Django accepts it as the token too
CSRF = "django.middleware.csrf.CsrfViewMiddleware"
INLINE = "appintegrity.web.django.AppIntegrityMiddleware"
BOUNDARY = "inline-review-boundary"
UPLOAD_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _post_upload(rig: Rig, middleware: list[str], mode: Mode = Mode.ENFORCE) -> HttpResponse:
    # Encoded here (not by the client) so that the app can sign the exact bytes it sends.
    body = encode_multipart(
        BOUNDARY,
        {"csrfmiddlewaretoken": CSRF_SECRET, "photo": io.BytesIO(b"\x89PNG...")},
    )
    options = {"PROTECTOR": rig.protector(mode), "ROUTES": {"/upload": RoutePolicy()}}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=middleware, APP_INTEGRITY=options):
        client = Client(enforce_csrf_checks=True)
        client.cookies["csrftoken"] = CSRF_SECRET
        response: HttpResponse = client.post(
            "/upload", data=body, content_type=UPLOAD_TYPE, headers=rig.assertion_headers(body)
        )
        return response


def test_django_multipart_body_read_by_an_earlier_middleware_is_a_typed_refusal(
    rig: Rig,
) -> None:
    # CsrfViewMiddleware reads request.POST, which streams a multipart body away: request.body
    # then raised RawPostDataException (a 500).
    response = _post_upload(rig, [CSRF, INLINE])
    assert response.status_code == 400
    error = json.loads(response.content)["error"]
    assert error["code"] == "request.invalid"
    assert "AppIntegrityMiddleware" in error["message"] and "MIDDLEWARE" in error["message"]
    assert rig.counter() == 0
    assert rig.metrics.count(route="/upload", reason="unreadable", action="refused") == 1


def test_django_multipart_body_read_earlier_passes_in_monitor_mode(rig: Rig) -> None:
    response = _post_upload(rig, [CSRF, INLINE], Mode.MONITOR)
    assert response.status_code == 200
    assert json.loads(response.content) == {"platform": None, "files": ["photo"]}
    assert rig.metrics.count(route="/upload", reason="unreadable", action="allowed") == 1


def test_django_multipart_upload_verifies_with_the_middleware_first(rig: Rig) -> None:
    response = _post_upload(rig, [INLINE, CSRF])
    assert response.status_code == 200
    assert json.loads(response.content) == {"platform": "ios", "files": ["photo"]}


def _flask_form_app(rig: Rig, *, read_form_first: bool) -> Flask:
    app = Flask(__name__)
    if read_form_first:

        @app.before_request
        def csrf_like() -> None:  # what Flask-WTF's CSRFProtect does for a POST
            request.form.get("csrf_token")

    integrity = AppIntegrity(app, rig.protector())

    @app.post("/buy")
    @integrity.protect(RoutePolicy())
    def buy() -> dict[str, object]:
        return {"platform": g.app_integrity.platform, "form": dict(request.form)}

    return app


FORM = b"item=gold&quantity=1"


def _post_form(rig: Rig, *, read_form_first: bool) -> TestResponse:
    """``FORM`` posted to the Flask form app's /buy with an assertion over its bytes."""
    client = _flask_form_app(rig, read_form_first=read_form_first).test_client()
    return client.post(
        "/buy",
        data=FORM,
        content_type="application/x-www-form-urlencoded",
        headers=rig.assertion_headers(FORM),
    )


def test_flask_form_parsed_before_the_check_is_a_typed_refusal(rig: Rig) -> None:
    # The form parser streams the body away without keeping it: get_data() gave b"", so the
    # assertion was checked over an empty body (apple.signature_invalid).
    response = _post_form(rig, read_form_first=True)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "request.invalid"
    assert "request.form" in error["message"]
    assert rig.counter() == 0
    assert rig.metrics.count(route="/buy", reason="unreadable", action="refused") == 1


def test_flask_form_verifies_when_nothing_read_it_first(rig: Rig) -> None:
    response = _post_form(rig, read_form_first=False)
    assert response.status_code == 200
    assert response.get_json() == {
        "platform": "ios",
        "form": {"item": "gold", "quantity": "1"},
    }
