"""The FastAPI application: routes of the wire contract, wired to ``IntegrityService``.

Handlers stay thin: each validates through its pydantic model, calls one function of the
service, and returns JSON. Errors leave through ``service.errors`` as ``{"error": …}``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from appintegrity import __version__
from appintegrity.errors import AppIntegrityError, Code
from appintegrity.service import assertions, registrations
from appintegrity.service.config import (
    JWKS_CACHE_SECONDS,
    AndroidAppConfig,
    IosAppConfig,
    ServiceConfig,
)
from appintegrity.service.debug_tokens import create_debug_token, debug_token_limit, hash_secret
from appintegrity.service.errors import (
    BodyLimitMiddleware,
    install_error_handlers,
    service_error,
)
from appintegrity.service.metrics import CONTENT_TYPE, LatencyMiddleware
from appintegrity.service.schemas import (
    AssertionRequest,
    AssertionResponse,
    ChallengeRequest,
    ChallengeResponse,
    DebugExchangeRequest,
    DebugExchangeResponse,
    DebugTokenCreateRequest,
    DebugTokenCreateResponse,
    DebugTokensResponse,
    DeviceKeysResponse,
    ErrorResponse,
    HealthResponse,
    IosAssertionRequest,
    RegistrationRequest,
    RegistrationResponse,
    RevokeResponse,
    SigningKeysResponse,
    TokenVerifyRequest,
    TokenVerifyResponse,
)
from appintegrity.service.state import IntegrityService, iso
from appintegrity.store.base import DebugTokenRecord, DeviceKey, Store
from appintegrity.tokens.issuer import IssuedToken

MAX_KEYS_LISTED = 10_000
log = logging.getLogger("appintegrity.service")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _service(request: Request) -> IntegrityService:
    service: IntegrityService = request.app.state.service
    return service


def _check_admin(request: Request) -> IntegrityService:
    service = _service(request)
    admin_key = service.config.server.admin_key
    if admin_key is None:
        raise service_error(Code.UNAUTHORIZED, "the admin API is off: no admin_key configured")
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode("utf-8"), admin_key.encode("utf-8")
    ):
        raise service_error(Code.UNAUTHORIZED, "Authorization: Bearer <admin_key> required")
    return service


def _key_info(key: DeviceKey) -> dict[str, object]:
    return {
        "keyId": key.key_id,
        "appId": key.app_id,
        "platform": key.platform,
        "environment": key.environment,
        "counter": key.counter,
        "riskMetric": key.risk_metric,
        "createdAt": iso(key.created_at),
        "lastSeenAt": iso(key.last_seen_at),
        "revokedAt": iso(key.revoked_at) if key.revoked_at else None,
    }


def _debug_info(record: DebugTokenRecord) -> dict[str, object]:
    return {
        "tokenId": record.token_id,
        "appId": record.app_id,
        "name": record.name,
        "createdAt": iso(record.created_at),
        "revokedAt": iso(record.revoked_at) if record.revoked_at else None,
    }


def create_app(
    config: ServiceConfig,
    *,
    store: Store | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The integrity service as an ASGI app; the store opens (and migrates) on startup."""
    service = IntegrityService(config, store=store, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="appintegrity",
        version=__version__,
        description=(
            "Verifies Apple App Attest and Google Play Integrity, and issues short-lived app "
            "tokens (ES256 JWTs) that any API verifies against the JWKS. Every error is "
            '`{"error": {"code", "message"}}` with a stable code.'
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)

    @app.post(
        "/v1/challenges",
        status_code=201,
        response_model=ChallengeResponse,
        responses=_errors(400, 413, 429, 503),
        tags=["devices"],
    )
    async def issue_challenge(
        request: Request, body: Annotated[ChallengeRequest | None, Body()] = None
    ) -> Response:
        """A one-time challenge (256 random bits, base64url), optionally bound to a key id."""
        purpose = body.purpose if body is not None else None
        key_text = body.keyId if body is not None else None
        key_id = registrations.canonical_key_id(key_text) if key_text is not None else None
        await service.limiter.challenge(_client(request))
        record = await service.challenges.issue(purpose, key_id)
        return JSONResponse(
            {"challenge": record.value, "expiresAt": iso(record.expires_at)}, status_code=201
        )

    @app.post(
        "/v1/registrations",
        status_code=201,
        response_model=RegistrationResponse,
        responses=_errors(400, 401, 404, 409, 413, 429, 503),
        tags=["devices"],
    )
    async def register(request: Request, body: RegistrationRequest) -> Response:
        """Register an App Attest key: verify the attestation, store the key."""
        result = await registrations.register(service, body, _client(request))
        return JSONResponse(result, status_code=201)

    @app.post(
        "/v1/assertions",
        response_model=AssertionResponse,
        responses=_errors(400, 401, 403, 404, 409, 413, 429, 503),
        tags=["devices"],
    )
    async def assertion(
        request: Request, body: Annotated[AssertionRequest, Body(discriminator="platform")]
    ) -> Response:
        """An App Attest assertion (iOS) or a Play Integrity token (Android) for one request."""
        if isinstance(body, IosAssertionRequest):
            result = await assertions.assert_ios(service, body, _client(request))
        else:
            result = await assertions.assert_android(service, body, _client(request))
        return JSONResponse(result)

    @app.post(
        "/v1/tokens/verify",
        response_model=TokenVerifyResponse,
        responses=_errors(400, 401, 409, 413, 503),
        tags=["tokens"],
    )
    async def verify_token(body: TokenVerifyRequest) -> Response:
        """Check an app token (for backends that cannot verify JWTs); ``consume`` uses up a
        limited-use token."""
        claims = await service.keys.verify(body.token)
        if body.consume:
            if not claims.limited_use:
                raise service_error(
                    Code.TOKEN_NOT_LIMITED_USE, "only limited-use tokens can be consumed"
                )
            # Remembered as long as the token verifies (exp + leeway), not just until exp: a
            # store that forgets at exp (purge, Redis TTL) would let it be used again.
            expires_at = datetime.fromtimestamp(
                claims.expires_at + service.config.tokens.leeway_seconds, UTC
            )
            if not await service.store.consume_token_id(claims.jti, expires_at, service.clock()):
                raise service_error(Code.TOKEN_CONSUMED, "this limited-use token was used")
        return JSONResponse({"valid": True, "claims": dict(claims.raw)})

    @app.post(
        "/v1/debug/exchange",
        response_model=DebugExchangeResponse,
        responses=_errors(400, 401, 403, 404, 413, 429, 503),
        tags=["tokens"],
    )
    async def debug_exchange(request: Request, body: DebugExchangeRequest) -> Response:
        """Exchange a debug token (simulators, emulators, CI) for an app token marked debug."""
        await service.limiter.verification(_client(request))
        app_config = service.config.app(body.appId)
        if app_config is None:
            raise service_error(Code.APP_UNKNOWN, f"the app {body.appId} is not configured")
        # Debug tokens are a way past attestation: every use is counted and logged (by token
        # id, never the secret), so operators can see and alert on them.
        started = time.perf_counter()
        try:
            issued = await _exchange_debug_token(service, app_config, body)
        except AppIntegrityError as exc:
            service.metrics.verification(
                platform=app_config.platform,
                kind="debug",
                app=body.appId,
                outcome="refused",
                reason=exc.code,
                started=started,
            )
            raise
        service.metrics.verification(
            platform=app_config.platform,
            kind="debug",
            app=body.appId,
            outcome="allow",
            reason="",
            started=started,
        )
        return JSONResponse(
            {
                "appToken": issued.token,
                "expiresAt": iso(issued.expires_at),
                "decision": "allow",
                "debug": True,
            }
        )

    @app.get("/.well-known/jwks.json", tags=["tokens"], responses=_errors(503))
    async def jwks() -> Response:
        """The public keys that verify app tokens (the active one and recently retired ones)."""
        return Response(
            service.keys.jwks_json,
            media_type="application/json",
            headers={"Cache-Control": f"public, max-age={JWKS_CACHE_SECONDS}"},
        )

    @app.get("/healthz", response_model=HealthResponse, responses=_errors(503), tags=["operations"])
    async def healthz() -> Response:
        """200 when the store answers; 503 ``store.unavailable`` otherwise."""
        await service.store.ping()
        return JSONResponse({"status": "ok"})

    # Load balancers probe with HEAD too; the same check, left out of the schema (one entry).
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: verifications by platform, outcome and reason; latency."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    # Admin API (Authorization: Bearer <admin_key>) ----------------------------------------
    admin_errors = _errors(400, 401, 404, 503)

    @app.post(
        "/v1/admin/signing-keys/rotate",
        response_model=SigningKeysResponse,
        responses=admin_errors,
        tags=["admin"],
    )
    async def rotate_signing_key(request: Request) -> Response:
        """A new key is published at once and signs once every instance has had time to load
        it (``next`` until then); the old ones keep verifying until their tokens expire."""
        _check_admin(request)
        await service.keys.rotate()
        return JSONResponse(_signing_keys(service))

    @app.get(
        "/v1/admin/signing-keys",
        response_model=SigningKeysResponse,
        responses=admin_errors,
        tags=["admin"],
    )
    async def list_signing_keys(request: Request) -> Response:
        _check_admin(request)
        return JSONResponse(_signing_keys(service))

    @app.get(
        "/v1/admin/keys", response_model=DeviceKeysResponse, responses=admin_errors, tags=["admin"]
    )
    async def list_keys(
        request: Request,
        appId: str | None = None,
        limit: int = Query(1000, ge=1, le=MAX_KEYS_LISTED),
    ) -> Response:
        """Device keys, newest first; ``truncated`` says more match than ``limit``."""
        _check_admin(request)
        keys = await service.store.list_keys(appId, limit + 1)
        return JSONResponse(
            {"keys": [_key_info(k) for k in keys[:limit]], "truncated": len(keys) > limit}
        )

    @app.post(
        "/v1/admin/keys/{key_id}/revoke",
        response_model=RevokeResponse,
        responses=admin_errors,
        tags=["admin"],
    )
    async def revoke_key(request: Request, key_id: str) -> Response:
        _check_admin(request)
        canonical = registrations.canonical_key_id(key_id)
        if not await service.store.revoke_key(canonical, service.clock()):
            raise service_error(Code.KEY_UNKNOWN, "no key with this id is registered")
        return JSONResponse({"revoked": True})

    @app.get(
        "/v1/admin/debug-tokens",
        response_model=DebugTokensResponse,
        responses=admin_errors,
        tags=["admin"],
    )
    async def list_debug_tokens(request: Request, appId: str | None = None) -> Response:
        _check_admin(request)
        tokens = await service.store.list_debug_tokens(appId)
        return JSONResponse({"tokens": [_debug_info(t) for t in tokens]})

    @app.post(
        "/v1/admin/debug-tokens",
        status_code=201,
        response_model=DebugTokenCreateResponse,
        responses=_errors(400, 401, 404, 409, 503),
        tags=["admin"],
    )
    async def create_debug(request: Request, body: DebugTokenCreateRequest) -> Response:
        """Create a debug token; the secret is in this response only. 409 debug_token.limit
        when the app already has its maximum of non-revoked tokens (default 20)."""
        _check_admin(request)
        if service.config.app(body.appId) is None:
            raise service_error(Code.APP_UNKNOWN, f"the app {body.appId} is not configured")
        record, secret = await create_debug_token(
            service.store,
            app_id=body.appId,
            name=body.name,
            now=service.clock(),
            limit=debug_token_limit(service.config, body.appId),
        )
        log.info("debug token %s (%s) created for %s", record.token_id, body.name, body.appId)
        return JSONResponse({**_debug_info(record), "secret": secret}, status_code=201)

    @app.post(
        "/v1/admin/debug-tokens/{token_id}/revoke",
        response_model=RevokeResponse,
        responses=admin_errors,
        tags=["admin"],
    )
    async def revoke_debug(request: Request, token_id: str) -> Response:
        _check_admin(request)
        if not await service.store.revoke_debug_token(token_id, service.clock()):
            raise service_error(Code.DEBUG_TOKEN_UNKNOWN, "no debug token with this id")
        log.info("debug token %s revoked through the admin API", token_id)
        return JSONResponse({"revoked": True})

    _document_errors_only_as_json(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.server.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=service.metrics)
    return app


async def _exchange_debug_token(
    service: IntegrityService,
    app_config: IosAppConfig | AndroidAppConfig,
    body: DebugExchangeRequest,
) -> IssuedToken:
    if not app_config.allow_debug_tokens:
        raise service_error(
            Code.TOKEN_DEBUG_REFUSED, f"debug tokens are turned off for {body.appId}"
        )
    record = await service.store.find_debug_token(hash_secret(body.debugToken))
    if record is None or record.app_id != body.appId:
        raise service_error(Code.TOKEN_INVALID, "unknown debug token for this app")
    if record.revoked_at is not None:
        raise service_error(Code.TOKEN_DEBUG_REFUSED, "this debug token was revoked")
    log.info("debug token %s exchanged for an app token of %s", record.token_id, body.appId)
    return service.issue_token(
        app_id=body.appId,
        platform=app_config.platform,
        decision="allow",
        debug=True,
        binding=body.binding,
    )


def _signing_keys(service: IntegrityService) -> dict[str, object]:
    snapshot = service.keys.snapshot
    return {
        "active": service.keys.active_kid,
        "next": service.keys.next_kid,
        "keys": [
            {
                "kid": r.kid,
                "createdAt": iso(r.created_at),
                "retiredAt": iso(r.retired_at) if r.retired_at else None,
            }
            for r in snapshot.records
        ],
    }


def _document_errors_only_as_json(app: FastAPI) -> None:
    """FastAPI documents a 422 validation error; this service answers 400 ``request.invalid``
    with the common error body instead, so the schema says exactly that."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                if "requestBody" in operation or operation.get("parameters"):
                    responses.setdefault(
                        "400",
                        {
                            "description": "request.invalid",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                                }
                            },
                        },
                    )
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
