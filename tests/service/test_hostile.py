"""Hostile and broken input: always the JSON error with a 4xx, never a 500 or a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Service, error_of


def raw_http(service: Service, request: bytes) -> bytes:
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_body_over_the_limit_by_content_length_is_413(service: Service) -> None:
    response = service.client.post(
        "/v1/assertions",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, error_of(response)) == (413, "request.too_large")


def test_chunked_body_over_the_limit_is_413(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    response = service.client.post(
        "/v1/registrations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert (response.status_code, error_of(response)) == (413, "request.too_large")


def test_lying_content_length_is_answered_with_json(service: Service) -> None:
    reply = raw_http(
        service,
        b"POST /v1/challenges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999\r\n\r\n{}",
    )
    assert reply.startswith(b"HTTP/1.1 413")
    assert b'"request.too_large"' in reply


@pytest.mark.parametrize(
    "body",
    [
        {"platform": "ios", "format": "apple-app-attest", "keyId": 5, "payload": "x", "token": "x"},
        {"platform": "ios", "format": "apple-app-attest", "keyId": "k", "payload": ["x"]},
        {"platform": "windows", "format": "apple-app-attest", "payload": "x", "token": "x"},
        {"platform": "ios", "format": "safetynet", "keyId": "k", "payload": "x", "token": "x"},
        {"platform": "android", "format": "apple-app-attest", "payload": "x", "token": "x"},
        {"platform": "ios", "format": "apple-app-attest", "keyId": "k", "payload": "x"},
        {"platform": "android", "format": "google-play-integrity", "payload": "", "token": "x"},
        {
            "platform": "ios",
            "format": "apple-app-attest",
            "keyId": "AAAA",
            "payload": "x",
            "token": "x",
            "limitedUse": "yes",
        },
        {"platform": "ios", "format": "apple-app-attest", "keyId": "k", "payload": "x", "x": 1},
        None,
        [],
        "a string",
        12,
    ],
)
def test_malformed_assertion_requests_are_request_invalid(service: Service, body: object) -> None:
    response = service.client.post("/v1/assertions", json=body)
    assert (response.status_code, error_of(response)) == (400, "request.invalid")


def test_key_id_that_is_not_base64_is_request_invalid(service: Service) -> None:
    body = {
        "platform": "ios",
        "format": "apple-app-attest",
        "keyId": "%%%not-base64%%%",
        "payload": "x",
        "token": "AAAA",
    }
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "request.invalid")


def test_assertion_token_that_is_not_base64_is_apple_malformed(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    body["token"] = "!!!!"
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "apple.malformed")


def test_assertion_token_that_is_base64_of_junk_is_apple_malformed(service: Service) -> None:
    phone, key_id = service.register()
    body = service.assertion_body(phone, key_id)
    body["token"] = "AAECAwQF"
    response = service.post("/v1/assertions", body)
    assert (response.status_code, error_of(response)) == (400, "apple.malformed")


@pytest.mark.parametrize(
    "content", [b"{", b"not json", b"\xff\xfe\x00", b'{"a": NaN}', b"[" * 5000 + b"]" * 5000]
)
def test_bodies_that_are_not_json_are_request_invalid(service: Service, content: bytes) -> None:
    response = service.client.post(
        "/v1/registrations", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response) == "request.invalid"


def test_unknown_route_and_method_are_json(service: Service) -> None:
    missing = service.client.get("/v2/everything")
    assert (missing.status_code, error_of(missing)) == (404, "request.not_found")
    wrong_method = service.client.get("/v1/assertions")
    assert (wrong_method.status_code, error_of(wrong_method)) == (
        405,
        "request.method_not_allowed",
    )
    assert wrong_method.headers["allow"] == "POST"


def test_healthz_answers_head_as_load_balancers_probe(service: Service) -> None:
    response = service.client.head("/healthz")
    assert (response.status_code, response.content) == (200, b"")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["platform", "format", "keyId", "payload", "token", "challenge", "limitedUse"]
                )
                | st.text(max_size=8),
                children,
                max_size=6,
            )
        ),
        max_leaves=12,
    ),
    path=st.sampled_from(
        ["/v1/assertions", "/v1/registrations", "/v1/challenges", "/v1/tokens/verify"]
    ),
)
def test_arbitrary_json_never_causes_a_server_error(
    service: Service, body: object, path: str
) -> None:
    response = service.client.post(path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error_of(response)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    token=st.binary(min_size=1, max_size=600)
    | st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from([b"\xa3cfmtoapple-appattest", b"\xa2", b"\xbf", b"\xd9\xd9\xf7", b"\xa1"]),
        st.binary(max_size=300),
    )
)
def test_arbitrary_attestation_bytes_are_refused_as_apple_errors(
    service: Service, token: bytes
) -> None:
    import base64

    phone = service.kit.iphone()
    body = service.registration_body(phone)
    body["token"] = base64.b64encode(token).decode()
    response = service.post("/v1/registrations", body)
    assert response.status_code in (400, 401, 409), response.text
    assert error_of(response).startswith("apple.")
