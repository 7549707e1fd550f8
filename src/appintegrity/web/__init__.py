"""Protect an API with app tokens: one line in front of the routes that matter.

``Protector`` is the framework-neutral core; the adapters live in submodules so that
importing this package pulls in no web framework: ``appintegrity.web.asgi`` (Starlette,
FastAPI, any ASGI app), ``.fastapi`` (a dependency), ``.wsgi``, ``.flask``, ``.django``.
``.inline`` is inline mode (no service: the device proof is checked in the API itself), which
the ASGI, WSGI, Flask and Django adapters also serve.
"""

from __future__ import annotations

from appintegrity.tokens import TOKEN_UNVERIFIABLE
from appintegrity.web.consumers import ServiceTokenConsumer, StoreTokenConsumer, TokenConsumer
from appintegrity.web.metrics import WebMetrics
from appintegrity.web.policy import Mode, RoutePolicy, RouteTable
from appintegrity.web.protector import DEFAULT_HEADER, Outcome, Protector, Verdict

__all__ = [
    "DEFAULT_HEADER",
    "TOKEN_UNVERIFIABLE",
    "Mode",
    "Outcome",
    "Protector",
    "RoutePolicy",
    "RouteTable",
    "ServiceTokenConsumer",
    "StoreTokenConsumer",
    "TokenConsumer",
    "Verdict",
    "WebMetrics",
]
