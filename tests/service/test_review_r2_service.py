"""Review findings on the service, over real HTTP on loopback: exact codes and statuses."""

from __future__ import annotations

import base64

from .conftest import Service, error_of


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_verify_with_a_deeply_nested_header_is_401_not_500(service: Service) -> None:
    token = f"{_b64(b'[' * 3000)}.{_b64(b'{}')}.{'A' * 86}"
    response = service.post("/v1/tokens/verify", {"token": token})
    assert (response.status_code, error_of(response)) == (401, "token.invalid")
