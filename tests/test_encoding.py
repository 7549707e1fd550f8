"""Base64 and key-id spellings as real apps send them."""

from __future__ import annotations

import base64
import binascii
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appintegrity.encoding import (
    EncodingError,
    b64decode_lenient,
    b64url_decode_strict,
    b64url_encode,
    normalize_key_id,
)

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


# -- JOSE base64url, strict ------------------------------------------------------------------


@given(st.binary(max_size=600))  # both decoders: short segments and long ones
def test_strict_base64url_reads_what_the_standard_library_writes(data: bytes) -> None:
    assert b64url_decode_strict(b64url_encode(data).encode()) == data


@pytest.mark.parametrize(
    "segment",
    [
        b"QUJD+A",  # standard alphabet
        b"QUJD/A",
        b"QUI=",  # padding
        b"QUJDRA==",
        b"QUJ D",  # whitespace
        b"QUJD\n",
        b"QUJDR",  # impossible length (4n + 1)
        b"QUJ*",  # outside both alphabets
        "QUJÉ".encode(),
        b"QUJD" * 100 + b"+A",  # the same, long enough for the other decoder
        b"QUJD" * 100 + b"QQ==",
        b"QUJD" * 100 + b"QUJ D",
        b"QUJD" * 100 + b"R",
        b"QUJD" * 100 + b"QUJ*",
    ],
)
def test_strict_base64url_refuses_everything_else(segment: bytes) -> None:
    with pytest.raises(EncodingError):
        b64url_decode_strict(segment)


@given(
    st.one_of(
        st.binary(max_size=64),
        st.text("QUJDab01-_+/= \n", max_size=12).map(str.encode),
        st.text("QUJDab01-_+/= \n", min_size=320, max_size=400).map(str.encode),
        st.text("QUJDab01-_", min_size=320, max_size=400).map(str.encode),
    )
)
def test_strict_base64url_agrees_with_the_standard_library_on_any_bytes(data: bytes) -> None:
    """Accepts exactly what a strict binascii decode of the URL-safe alphabet accepts."""
    table = bytes.maketrans(b"-_+/=", b"+/!!!")
    try:
        translated = data.translate(table)
        if len(translated) % 4 == 1:
            raise ValueError("length")
        padded = translated + (b"", b"", b"==", b"=")[len(translated) % 4]
        expected: bytes | None = binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, ValueError):
        expected = None
    try:
        found: bytes | None = b64url_decode_strict(data)
    except EncodingError:
        found = None
    assert found == expected
