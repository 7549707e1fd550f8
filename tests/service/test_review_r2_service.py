"""Review findings on the service, over real HTTP on loopback: exact codes and statuses."""

from __future__ import annotations

import asyncio
import base64

from appintegrity.store import open_store

from .conftest import Service, error_of


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_verify_with_a_deeply_nested_header_is_401_not_500(service: Service) -> None:
    token = f"{_b64(b'[' * 3000)}.{_b64(b'{}')}.{'A' * 86}"
    response = service.post("/v1/tokens/verify", {"token": token})
    assert (response.status_code, error_of(response)) == (401, "token.invalid")


def _purge_expired(service: Service) -> None:
    """What the service's purge loop does every purge_interval_seconds, run now."""

    async def purge() -> None:
        store = open_store(service.store_url)
        try:
            await store.purge_expired(service.clock())
        finally:
            await store.close()

    asyncio.run(purge())


def test_limited_use_token_stays_consumed_through_the_expiry_leeway(service: Service) -> None:
    # The verifier accepts a token until exp + leeway (30 s here); the used jti must be
    # remembered at least that long, or a purge right after exp lets the token be used again.
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id, limitedUse=True)
    token = service.post("/v1/assertions", body).json()["appToken"]
    first = service.post("/v1/tokens/verify", {"token": token, "consume": True})
    assert first.status_code == 200, first.text
    ttl = service.config.tokens.ttl_seconds
    service.clock.advance(seconds=ttl + 10)  # past exp, inside the leeway
    _purge_expired(service)
    again = service.post("/v1/tokens/verify", {"token": token, "consume": True})
    assert (again.status_code, error_of(again)) == (409, "token.consumed")
