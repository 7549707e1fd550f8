"""Runners for the shared vector format (``../shared/vectors/README.md``), one module per kind.

A kind ``apple-attestation`` is run by ``appintegrity.cli.vectors.apple_attestation.run``:
it takes the vector's ``input`` mapping and its ``verify_at`` time, and returns the
``{"valid": true, ...}`` conclusion, or raises ``VerificationError`` (the ``valid: false``
conclusion) or ``VectorFormatError`` (the file itself is unusable: exit status 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.keys import load_public_key
from appintegrity.errors import AppleVerificationError


class VectorFormatError(ValueError):
    """The vector file is unusable: not JSON, unknown kind, missing or mistyped field."""


class VectorRunner(Protocol):
    """The signature every kind module's ``run`` has."""

    def __call__(self, inputs: Mapping[str, object], verify_at: datetime) -> dict[str, object]: ...


def text_field(inputs: Mapping[str, object], name: str, *, non_empty: bool = False) -> str:
    """A required string field of ``input`` (``non_empty``: and not ``""``)."""
    value = inputs.get(name)
    if not isinstance(value, str):
        raise VectorFormatError(f"input.{name} must be a string")
    if non_empty and not value:
        raise VectorFormatError(f"input.{name} must not be empty")
    return _utf8_text(value, name)


def _utf8_text(value: str, name: str) -> str:
    # JSON can escape a lone UTF-16 surrogate ("\ud800"); such text has no UTF-8 bytes, so it
    # cannot be what a device signed or an app id: the file is unusable, not a verifier bug.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VectorFormatError(f"input.{name} is not valid Unicode text ({exc.reason})") from exc
    return value


def app_id_field(inputs: Mapping[str, object]) -> str:
    """``app_id``: the verifier's own setting, so an empty one makes the file unusable."""
    return text_field(inputs, "app_id", non_empty=True)


def public_key_field(inputs: Mapping[str, object], name: str) -> ec.EllipticCurvePublicKey:
    """The stored (attested) P-256 key: PEM, DER or the uncompressed point, raw or base64.

    The key is the vector's own material, like its trust roots: one that is not a P-256 public
    key makes the file unusable rather than the object invalid.
    """
    try:
        return load_public_key(text_field(inputs, name))
    except AppleVerificationError as exc:
        raise VectorFormatError(f"input.{name}: {exc.message}") from exc


def optional_text_field(inputs: Mapping[str, object], name: str) -> str | None:
    """An optional string field of ``input``."""
    value = inputs.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise VectorFormatError(f"input.{name} must be a string")
    return _utf8_text(value, name)


def int_field(inputs: Mapping[str, object], name: str, *, minimum: int | None = None) -> int:
    """A required integer field of ``input`` (booleans are not integers here)."""
    value = inputs.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VectorFormatError(f"input.{name} must be an integer")
    if minimum is not None and value < minimum:
        raise VectorFormatError(f"input.{name} must be at least {minimum}, found {value}")
    return value


def text_list_field(inputs: Mapping[str, object], name: str) -> list[str] | None:
    """An optional list of strings."""
    value = inputs.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise VectorFormatError(f"input.{name} must be a list of strings")
    return list(value)


def required_text_list_field(inputs: Mapping[str, object], name: str) -> list[str]:
    """A required, non-empty list of strings."""
    values = text_list_field(inputs, name)
    if not values:
        raise VectorFormatError(f"input.{name} must be a non-empty list of strings")
    return values
