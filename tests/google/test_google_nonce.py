"""Binding helpers follow Google's nonce rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appintegrity.google.nonce import content_binding, request_hash, unique_nonce, validate_nonce


def test_request_hash_is_unpadded_base64url_sha256() -> None:
    digest = hashlib.sha256(b"body").digest()
    assert request_hash(b"body") == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert request_hash("body") == request_hash(b"body")


def test_content_binding_is_stable_across_key_order_and_spacing() -> None:
    first = content_binding({"b": [1, 2], "a": {"y": "é", "x": 1}})
    second = content_binding({"a": {"x": 1, "y": "é"}, "b": [1, 2]})
    assert first == second == request_hash('{"a":{"x":1,"y":"é"},"b":[1,2]}'.encode())
    assert content_binding({"a": 1}) != content_binding({"a": 2})
    validate_nonce(first)


def test_unique_nonces_are_long_random_and_valid() -> None:
    values = {unique_nonce() for _ in range(100)}
    assert len(values) == 100
    assert all(len(validate_nonce(v)) == 43 for v in values)
    assert len(unique_nonce(128)) == 22
    with pytest.raises(ValueError):
        unique_nonce(64)


@pytest.mark.parametrize(
    "value", ["short", "a" * 501, "has+plus/slash==", "line\nbreak0123456789", "pad=in-the-middle"]
)
def test_invalid_nonces_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        validate_nonce(value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_validate_nonce_only_raises_value_error(value: str) -> None:
    try:
        assert validate_nonce(value) == value
    except ValueError:
        pass
