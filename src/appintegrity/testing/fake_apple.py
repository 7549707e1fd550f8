"""A fake of Apple's App Attest data server (receipt refresh), over real HTTP on loopback.

``FakeAppleDataServer`` speaks the wire format of ``POST /v1/attestationData``: it checks the
ES256 ``Authorization`` JWT against the configured DeviceCheck public key, team id and key id,
validates the posted base64 receipt against its ``ReceiptAuthority``, and answers as Apple does:
200 with a newer ``RECEIPT`` (risk metric incremented) in base64, or 304 while the old receipt's
"not before" time has not passed. Tests can script other answers (304, 404, 401, 429, 500, slow)
with ``respond``::

    with FakeAppleDataServer(authority=authority, public_key=key.public_key(),
                             team_id="ABCDE12345", key_id="KEY1234567") as apple:
        client = ReceiptRefreshClient(..., base_url=apple.url)
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.receipt import ReceiptType, verify_receipt
from appintegrity.apple.receipt_refresh import REFRESH_PATH
from appintegrity.encoding import EncodingError, b64decode_lenient
from appintegrity.errors import AppleVerificationError
from appintegrity.testing.receipts import ReceiptAuthority

__all__ = ["FakeAppleDataServer", "RecordedRequest", "ScriptedResponse"]

_TOKEN_LIFETIME = timedelta(hours=1)
_REFRESH_DELAY = timedelta(days=1)
_RECEIPT_LIFETIME = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """One answer to give instead of the default behaviour.

    ``status`` 200 with no ``body`` means "behave normally" (after ``delay`` seconds), which is how
    a slow server is scripted.
    """

    status: int
    body: bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class FakeAppleDataServer:
    """Apple's receipt refresh endpoint on ``127.0.0.1`` (a random port, a background thread).

    ``public_key`` verifies the Authorization JWT; ``clock`` dates new receipts and judges the JWT's
    ``iat`` (default: the real clock). ``next_risk_metric`` forces the metric of the next receipt.
    """

    def __init__(
        self,
        *,
        authority: ReceiptAuthority,
        public_key: ec.EllipticCurvePublicKey,
        team_id: str,
        key_id: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.authority = authority
        self.public_key = public_key
        self.team_id = team_id
        self.key_id = key_id
        self.clock = clock or (lambda: datetime.now(UTC))
        self.next_risk_metric: int | None = None
        self.requests: list[RecordedRequest] = []
        self._script: list[ScriptedResponse] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to give ``ReceiptRefreshClient(base_url=...)``."""
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self, *responses: ScriptedResponse | int) -> None:
        """Queue answers for the next requests, one each; then the default behaviour resumes."""
        with self._lock:
            self._script += [
                ScriptedResponse(item) if isinstance(item, int) else item for item in responses
            ]

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._send(self, 405, b"method not allowed", {})

            def log_message(self, format: str, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval lets stop() return promptly (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-apple", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAppleDataServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- request handling -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            scripted = self._script.pop(0) if self._script else None
        if scripted is not None and scripted.delay:
            time.sleep(scripted.delay)
        if scripted is not None and not (scripted.status == 200 and scripted.body is None):
            status, payload, headers = scripted.status, scripted.body or b"", scripted.headers
        else:
            status, payload = self._answer(handler, body)
            headers = {}
        self.requests.append(
            RecordedRequest(
                method=handler.command,
                path=handler.path,
                headers=dict(handler.headers.items()),
                body=body,
                status=status,
            )
        )
        self._send(handler, status, payload, headers)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        if handler.path != REFRESH_PATH:
            return 404, b"not found"
        problem = self._authorization_problem(handler.headers.get("Authorization"))
        if problem is not None:
            return 401, problem.encode()
        now = self.clock()
        try:
            old = verify_receipt(
                b64decode_lenient(body), now=now, trust_roots=[self.authority.root_certificate]
            )
        except (EncodingError, AppleVerificationError) as exc:
            return 400, f"invalid receipt: {exc}".encode()
        if old.not_before is not None and now < old.not_before:
            return 304, b""
        metric = self.next_risk_metric
        self.next_risk_metric = None
        if metric is None:
            metric = (old.risk_metric or 0) + 1
        new = self.authority.issue(
            app_id=old.app_id,
            attested_certificate_der=old.attested_certificate,
            # Apple's refreshed receipts carry the client hash passed through a UTF-8 decoder.
            client_hash=old.client_hash.decode("utf-8", "replace").encode("utf-8"),
            token=old.token,
            type=ReceiptType.RECEIPT,
            risk_metric=metric,
            environment=old.environment,
            creation_time=now,
            not_before=now + _REFRESH_DELAY,
            expiration_time=now + _RECEIPT_LIFETIME,
        )
        return 200, base64.b64encode(new)

    def _authorization_problem(self, header: str | None) -> str | None:
        if not header:
            return "missing Authorization"
        try:
            token_header = jwt.get_unverified_header(header)
            claims = jwt.decode(
                header,
                self.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            return f"invalid token: {exc}"
        if token_header.get("kid") != self.key_id:
            return "unknown key id"
        if claims.get("iss") != self.team_id:
            return "wrong issuer"
        iat = claims.get("iat")
        if not isinstance(iat, int):
            return "iat is not a number"
        issued = datetime.fromtimestamp(iat, UTC)
        now = self.clock()
        if issued > now + timedelta(minutes=1) or now - issued > _TOKEN_LIFETIME:
            return "token expired or issued in the future"
        return None

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]
    ) -> None:
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            if status != 304:
                handler.send_header("Content-Type", "text/plain")
                handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if status != 304 and payload:
                handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up (a timeout test): nothing to answer
