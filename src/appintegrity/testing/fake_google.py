"""A local stand-in for Google's Play Integrity decode API and OAuth token endpoint, over real HTTP.

``FakeGoogleServer`` listens on 127.0.0.1 (random port) in a background thread. It answers
``POST /v1/{package}:decodeIntegrityToken`` like Google: bearer token required, the token
decrypted and verified with the keys registered for the package (by joserfc, independently of the
code under test), ``{"tokenPayloadExternal": …}`` on success, Google's error shape otherwise, and
cleared verdicts when a standard token is decoded a second time. ``POST /token`` implements the
service-account JWT-bearer grant, checking the assertion's RS256 signature. Failures and delays can
be queued (``fail_next``, ``delay_next``, ``fail_next_token``) to test retries and timeouts.

    with FakeGoogleServer() as google:
        google.register(device)
        info = google.make_service_account()
        decoder = GoogleApiDecoder(service_account_info=info, base_url=google.url)
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey

from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice

__all__ = ["FakeGoogleServer", "cleared_verdict"]

_DECODE_PATH = re.compile(r"\A/v1/([A-Za-z0-9_.]+):decodeIntegrityToken\Z")
_GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def cleared_verdict(payload: Mapping[str, object]) -> dict[str, object]:
    """What Google answers for a standard token decoded again: request details kept, device
    verdict absent, everything else ``UNEVALUATED``."""
    cleared: dict[str, object] = {
        "requestDetails": payload.get("requestDetails"),
        "appIntegrity": {"appRecognitionVerdict": "UNEVALUATED"},
        "deviceIntegrity": {},
        "accountDetails": {"appLicensingVerdict": "UNEVALUATED"},
    }
    if "environmentDetails" in payload:
        cleared["environmentDetails"] = {"playProtectVerdict": "UNEVALUATED"}
    return cleared


@dataclass
class _Planned:
    status: int | None = None
    delay: float = 0.0
    retry_after: int | None = None


class FakeGoogleServer:
    """Google's decode and token endpoints on loopback; a context manager; ``.url`` is the base."""

    def __init__(self, *, access_token_lifetime: int = 3600) -> None:
        self.access_token_lifetime = access_token_lifetime
        self._lock = threading.Lock()
        self._packages: dict[str, PlayIntegrityTestKeys] = {}
        self._service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self._access_tokens: dict[str, float] = {}
        self._seen_standard_tokens: set[str] = set()
        self._plan: deque[_Planned] = deque()
        self._token_plan: deque[int] = deque()
        self.decode_requests = 0
        self.token_requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def start(self) -> FakeGoogleServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-google",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeGoogleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- set-up ------------------------------------------------------------------------------

    def register(
        self, device: SoftwareAndroidDevice | str, keys: PlayIntegrityTestKeys | None = None
    ) -> None:
        """Link a package (a device's, or a name with its keys) to the fake's Cloud project."""
        if isinstance(device, SoftwareAndroidDevice):
            package, keys = device.package_name, device.keys
        else:
            package = device
        if keys is None:
            raise ValueError("register(package_name, keys) needs the package's keys")
        with self._lock:
            self._packages[package] = keys

    def make_service_account(
        self,
        client_email: str = "verifier@fake-project.iam",
        *,
        private_key: rsa.RSAPrivateKey | None = None,
    ) -> dict[str, str]:
        """A service account trusted by this server, as its JSON key file reads.

        A fresh RSA key is made unless ``private_key`` is given (reuse one to keep tests fast).
        """
        if private_key is None:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        with self._lock:
            self._service_accounts[key_id] = private_key.public_key()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": client_email,
            "client_id": "100000000000000000000",
            "token_uri": self.token_uri,
        }

    def fail_next(self, status: int, count: int = 1, *, retry_after: int | None = None) -> None:
        """The next ``count`` decode requests answer ``status`` with Google's error body."""
        with self._lock:
            self._plan.extend(
                _Planned(status=status, retry_after=retry_after) for _ in range(count)
            )

    def fail_next_token(self, status: int, count: int = 1) -> None:
        """The next ``count`` OAuth token requests answer ``status`` with an OAuth error body
        (google-auth itself retries 5xx three times, about a second apart, before giving up)."""
        with self._lock:
            self._token_plan.extend(status for _ in range(count))

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` decode requests wait ``seconds`` before answering normally."""
        with self._lock:
            self._plan.extend(_Planned(delay=seconds) for _ in range(count))

    def revoke_access_tokens(self) -> None:
        """Forget every issued access token (the next decode gets 401 until a refresh)."""
        with self._lock:
            self._access_tokens.clear()

    # -- request handling ------------------------------------------------------------------------

    def _issue_token(self, form: Mapping[str, list[str]]) -> tuple[int, dict[str, object]]:
        with self._lock:
            self.token_requests += 1
            planned = self._token_plan.popleft() if self._token_plan else None
        if planned is not None:
            error = "temporarily_unavailable" if planned >= 500 else "invalid_grant"
            return planned, {"error": error, "error_description": "planned failure"}
        if form.get("grant_type") != [_JWT_BEARER] or len(form.get("assertion", [])) != 1:
            return 400, {"error": "unsupported_grant_type"}
        assertion = form["assertion"][0]
        try:
            key_id = jwt.get_unverified_header(assertion).get("kid")
            public_key = self._service_accounts.get(str(key_id))
            if public_key is None:
                return 400, {"error": "invalid_grant", "error_description": "unknown key"}
            # google-auth addresses its assertions to Google's token endpoint whatever token_uri is.
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=[self.token_uri, _GOOGLE_TOKEN_AUDIENCE],
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if "https://www.googleapis.com/auth/playintegrity" not in str(claims.get("scope", "")):
            return 400, {"error": "invalid_scope"}
        access_token = secrets.token_urlsafe(24)
        with self._lock:
            self._access_tokens[access_token] = time.time() + self.access_token_lifetime
        return 200, {
            "access_token": access_token,
            "expires_in": self.access_token_lifetime,
            "token_type": "Bearer",
        }

    def _decode(
        self, package: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, object], dict[str, str]]:
        with self._lock:
            self.decode_requests += 1
            planned = self._plan.popleft() if self._plan else _Planned()
        if planned.delay:
            time.sleep(planned.delay)
        if planned.status is not None:
            headers = {"Retry-After": str(planned.retry_after)} if planned.retry_after else {}
            return planned.status, _error(planned.status, "planned failure"), headers
        scheme, _, bearer = (authorization or "").partition(" ")
        with self._lock:
            expiry = self._access_tokens.get(bearer)
            keys = self._packages.get(package)
        if scheme != "Bearer" or expiry is None or expiry < time.time():
            return 401, _error(401, "Request had invalid authentication credentials."), {}
        if keys is None:
            return 403, _error(403, f"{package} is not linked to this Cloud project."), {}
        try:
            request = json.loads(body)
            token = request["integrityToken"]
            if not isinstance(token, str):
                raise TypeError("integrityToken must be a string")
            inner = jwe.decrypt_compact(
                token, OctKey.import_key(keys.decryption_key), algorithms=["A256KW", "A256GCM"]
            ).plaintext
            if inner is None:
                raise ValueError("empty JWE")
            signed = jws.deserialize_compact(
                inner, ECKey.import_key(keys.signing_key.public_key()), algorithms=["ES256"]
            )
            payload = json.loads(signed.payload)
            if not isinstance(payload, dict):
                raise TypeError("payload is not an object")
        except (JoseError, ValueError, KeyError, TypeError):
            return 400, _error(400, "Integrity token cannot be decoded."), {}
        details = payload.get("requestDetails")
        if isinstance(details, dict) and "requestHash" in details:
            with self._lock:
                replayed = token in self._seen_standard_tokens
                self._seen_standard_tokens.add(token)
            if replayed:
                payload = cleared_verdict(payload)
        return 200, {"tokenPayloadExternal": payload}, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet in tests

            def _answer(
                self, status: int, body: Mapping[str, object], headers: Mapping[str, str]
            ) -> None:
                data = json.dumps(body).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = urllib.parse.urlsplit(self.path).path
                if path == "/token":
                    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                    status, answer = fake._issue_token(form)
                    self._answer(status, answer, {})
                    return
                match = _DECODE_PATH.match(path)
                if match is None:
                    self._answer(404, _error(404, "Not found."), {})
                    return
                status, answer, headers = fake._decode(
                    match.group(1), self.headers.get("Authorization"), body
                )
                self._answer(status, answer, headers)

        return Handler


def _error(status: int, message: str) -> dict[str, object]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
