"""Pure ASGI middleware: Starlette, FastAPI, Litestar, or any ASGI app.

Verified claims go to ``scope["state"]["app_integrity"]`` (Starlette's
``request.state.app_integrity``) and the whole verdict to ``scope["app_integrity"]``.
HTTP requests and WebSocket handshakes are checked; a refused handshake is closed with code
1008 (policy violation) before the app sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from appintegrity.web.policy import RoutePolicy, RouteSpec, RouteTable, route_table
from appintegrity.web.protector import Protector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refusal(Protocol):
    """What a refusing verdict offers (app-token ``Verdict`` and inline ``InlineVerdict``)."""

    @property
    def status(self) -> int: ...

    def body(self) -> bytes: ...

    def headers(self) -> list[tuple[str, str]]: ...


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``scope["path"]`` without the ``root_path`` prefix.

    A server started with ``--root-path /api`` and Starlette's ``Mount("/api", ...)`` both keep
    the prefix in ``path`` and name it in ``root_path``; the sub-app's routes (and so the
    patterns that protect them) are what follows it. The same reading as Starlette's router.
    """
    path: str = scope["path"]
    root: str | None = scope.get("root_path")
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    if not rest:
        return "/"
    return rest if rest[0] == "/" else path


async def send_refusal(send: Send, verdict: Refusal) -> None:
    """Answer with the verdict's JSON error; the app is never called."""
    body = verdict.body()
    headers = [(name.encode(), value.encode()) for name, value in verdict.headers()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": verdict.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# RFC 6455 §7.4.1: the endpoint refuses a message (here, a handshake) that violates its policy.
WEBSOCKET_POLICY_VIOLATION = 1008


class AppIntegrityMiddleware:
    """Checks the app token on the routes ``routes`` protects (all routes when omitted), for
    HTTP requests and WebSocket handshakes (matched as the GET request they are)."""

    def __init__(
        self,
        app: ASGIApp,
        protector: Protector,
        routes: RouteSpec | RouteTable | None = None,
        *,
        default: RoutePolicy | None = None,
    ) -> None:
        self.app = app
        self.protector = protector
        self.routes = route_table(routes, default, protector.validate)
        self._header = protector.header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            method = scope["method"]
        elif kind == "websocket":
            method = "GET"  # RFC 6455 §4.1: the opening handshake is a GET request
        else:
            await self.app(scope, receive, send)
            return
        match = self.routes.match(method, route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        route, policy = match
        token: str | None = None
        binding_value: bytes | None = None
        binding_header = (
            policy.binding_header.lower().encode("latin-1") if policy.binding_header else None
        )
        for name, value in scope["headers"]:
            if name == self._header:
                token = value.decode("latin-1").strip()
            elif name == binding_header:
                binding_value = value  # hashed exactly as received
        verdict = await self.protector.check_async(
            token, policy, route=route, binding_value=binding_value
        )
        if not verdict.allowed:
            if kind == "websocket":
                reason = str(verdict.error.code) if verdict.error is not None else ""
                await send(
                    {
                        "type": "websocket.close",
                        "code": WEBSOCKET_POLICY_VIOLATION,
                        "reason": reason,
                    }
                )
            else:
                await send_refusal(send, verdict)
            return
        scope["app_integrity"] = verdict
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["app_integrity"] = verdict.claims
        await self.app(scope, receive, send)
