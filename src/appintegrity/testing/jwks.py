"""A JWKS endpoint over real HTTP on loopback, with keys and availability a test controls.

Point ``appintegrity.tokens.HttpJwks`` (or any JWT library) at ``url`` to test how an API
fetches, refreshes and survives an outage of the integrity service's key set, without
running the service.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

JWKS_PATH = "/.well-known/jwks.json"


class JwksServer:
    """Serves ``document`` at ``/.well-known/jwks.json`` (404 elsewhere); ``fail = True`` makes
    it answer 500; ``requests`` counts the requests it received."""

    def __init__(self) -> None:
        self.document: dict[str, object] = {"keys": []}
        self.fail = False
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if server.fail or self.path != JWKS_PATH:
                    self.send_response(500 if server.fail else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}{JWKS_PATH}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> JwksServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
