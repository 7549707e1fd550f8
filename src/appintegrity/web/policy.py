"""Per-route policy: which routes need an app token, and what a token must be to pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    """App Check's rollout path: watch first (``monitor``), then refuse (``enforce``)."""

    MONITOR = "monitor"
    ENFORCE = "enforce"


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What a protected route asks of the app token.

    ``require_token``: a missing token is refused (False: missing passes, a presented token
    must still be valid). ``accept_limit``: a token whose decision is ``limit`` (a degraded
    but not blocked device) passes. ``refuse_debug``: tokens minted from debug secrets
    (simulators, CI) are refused. ``require_limited_use``: the token must be limited-use and
    is consumed, so it works exactly once. ``binding_header``: the token's ``pay`` claim
    must be the hash of this request header (Approov-style binding). ``mode`` overrides the
    protector's mode for this route, so one route can be enforced while others are watched.
    """

    require_token: bool = True
    accept_limit: bool = False
    refuse_debug: bool = False
    require_limited_use: bool = False
    binding_header: str | None = None
    mode: Mode | None = None


DEFAULT_POLICY = RoutePolicy()

RouteSpec = Mapping[str, RoutePolicy | None] | Iterable[tuple[str, RoutePolicy | None]]


class RouteTable:
    """Maps requests to policies by path pattern.

    A pattern is an exact path (``/purchases``), a prefix (``/premium/*``: ``/premium`` and
    everything under it; ``/*`` is every path), optionally preceded by a method
    (``POST /purchases``). The most specific pattern wins: exact before prefix, longer
    prefix before shorter, a method-specific pattern before one for any method. A pattern
    mapped to ``None`` leaves its routes unprotected (``/premium/preview``). The pattern is
    the route's label in metrics, so path parameters never explode their cardinality.

    An exact pattern that protects covers its path with or without one trailing slash
    (``/purchases`` and ``/purchases/``: frameworks that route both to one handler are common),
    never ``/``'s. One that opens (``None``) covers its path exactly as written: the other
    spelling stays under whatever prefix protects it.
    A ``GET`` pattern covers ``HEAD`` too (every framework answers HEAD with the GET handler,
    so the handler runs and its headers go out), unless a ``HEAD`` pattern names the same path.
    """

    def __init__(self, routes: RouteSpec, default: RoutePolicy | None = None) -> None:
        self._exact: dict[tuple[str, str], tuple[str, RoutePolicy | None]] = {}
        prefixes: list[tuple[int, int, str, str, str, RoutePolicy | None]] = []
        items = routes.items() if isinstance(routes, Mapping) else routes
        entries = [(*self._split(pattern), pattern, policy) for pattern, policy in items]
        named_for_head = {path for method, path, _, _ in entries if method == "HEAD"}
        entries += [
            ("HEAD", path, pattern, policy)
            for method, path, pattern, policy in entries
            if method == "GET" and path not in named_for_head
        ]
        for method, path, pattern, policy in entries:
            if path.endswith("/*"):
                base = path[:-2]
                prefixes.append((len(base), method != "*", method, base, pattern, policy))
            else:
                self._exact[(method, path)] = (pattern, policy)
        # The other spelling of each protecting exact pattern, unless a pattern names it.
        for (method, path), (pattern, policy) in list(self._exact.items()):
            if policy is None or path == "/":
                continue
            variant = path[:-1] if path.endswith("/") else path + "/"
            known = self._exact.get((method, variant))
            if known is None:
                self._exact[(method, variant)] = (pattern, policy)
            elif known[1] != policy:
                raise ValueError(f"route patterns {known[0]!r} and {pattern!r} name the same path")
        prefixes.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
        self._prefixes = [(m, base, pattern, policy) for _, _, m, base, pattern, policy in prefixes]
        self.default = default

    @staticmethod
    def _split(pattern: str) -> tuple[str, str]:
        method, _, path = pattern.strip().rpartition(" ")
        method = method.strip().upper() or "*"
        if not path.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        return method, path

    def match(self, method: str, path: str) -> tuple[str, RoutePolicy] | None:
        """``(label, policy)`` for a request, or None when the route is not protected."""
        # Methods are case-sensitive on the wire (RFC 9110 §9.1), but WSGI servers pass a
        # request line's "post" through and frameworks upper-case it before routing: match
        # as they route, or "post /buy" would reach the POST view unchecked.
        method = method.upper()
        found = self._exact.get((method, path)) or self._exact.get(("*", path))
        if found is None:
            for pattern_method, base, pattern, policy in self._prefixes:
                if pattern_method != "*" and pattern_method != method:
                    continue
                if path == base or path.startswith(base + "/") or base == "":
                    found = (pattern, policy)
                    break
        if found is None:
            return None if self.default is None else ("*", self.default)
        label, policy = found
        return None if policy is None else (label, policy)

    def policies(self) -> list[RoutePolicy]:
        """Every policy in the table (to check at start-up that the protector can serve them)."""
        listed = [p for _, p in self._exact.values()] + [p for *_, p in self._prefixes]
        if self.default is not None:
            listed.append(self.default)
        return [p for p in listed if p is not None]


def route_table(
    routes: RouteSpec | RouteTable | None,
    default: RoutePolicy | None,
    validate: Callable[[RoutePolicy], None],
) -> RouteTable:
    """Normalise the adapters' ``routes=`` argument (no routes means every path, default
    policy) and check every policy with the protector's ``validate`` at start-up, so a route
    the protector cannot honour fails when the app starts, not on a request."""
    if isinstance(routes, RouteTable):
        table = routes
    elif routes is None:
        table = RouteTable({}, default or DEFAULT_POLICY)
    else:
        table = RouteTable(routes, default)
    for policy in table.policies():
        validate(policy)
    return table
