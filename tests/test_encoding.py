"""Base64 and key-id spellings as real apps send them."""

from __future__ import annotations

import base64
import hashlib

import pytest

from appintegrity.encoding import EncodingError, b64decode_lenient, b64url_encode, normalize_key_id

RAW = hashlib.sha256(b"device key").digest()


@pytest.mark.parametrize(
    "spelling",
    [
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
        b64url_encode(RAW),
        RAW.hex(),
        RAW.hex().upper(),
        RAW,
    ],
)
def test_every_key_id_spelling_normalises_to_the_same_bytes(spelling: str | bytes) -> None:
    assert normalize_key_id(spelling) == RAW


@pytest.mark.parametrize("bad", ["", "a", "not base64!", "ä", base64.b64encode(b"short").decode()])
def test_bad_key_ids_raise_encoding_error(bad: str) -> None:
    with pytest.raises(EncodingError):
        normalize_key_id(bad)


def test_lenient_decoding_ignores_whitespace_and_padding() -> None:
    assert b64decode_lenient("aGVs\nbG8") == b"hello"
    assert b64decode_lenient(b"aGVsbG8=") == b"hello"


def test_lenient_decoding_refuses_wrong_types() -> None:
    with pytest.raises(EncodingError):
        b64decode_lenient(123)  # type: ignore[arg-type]
