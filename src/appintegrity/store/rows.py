"""Records to SQL rows and back, for the two SQL backends (SQLite and PostgreSQL).

Both keep the same columns in the same order; they differ only in how an instant is stored
(SQLite: integer microseconds; PostgreSQL: ``timestamptz``). So each conversion here takes the
backend's instant conversion, ``encode`` (aware datetime -> column value) or ``decode`` (column
value -> aware UTC datetime), and nothing else differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from appintegrity.store.base import (
    ChallengeRecord,
    DebugTokenRecord,
    DeviceKey,
    SigningKeyRecord,
    receipt_updated_at,
)

__all__ = [
    "SELECT_DEBUG_TOKENS",
    "SELECT_KEYS",
    "SELECT_SIGNING_KEYS",
    "challenge_record",
    "debug_token_params",
    "debug_token_record",
    "device_key_params",
    "device_key_record",
    "signing_key_params",
    "signing_key_record",
]

Encode = Callable[[datetime], Any]
Decode = Callable[[Any], datetime]

SELECT_KEYS = (
    "SELECT key_id, app_id, platform, public_key, counter, environment, receipt, risk_metric, "
    "created_at, last_seen_at, revoked_at, receipt_updated_at FROM device_keys"
)
SELECT_DEBUG_TOKENS = (
    "SELECT token_id, app_id, name, secret_hash, created_at, revoked_at FROM debug_tokens"
)
SELECT_SIGNING_KEYS = "SELECT kid, private_key_pem, created_at, retired_at FROM signing_keys"


def _optional(convert: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else convert(value)


def device_key_params(key: DeviceKey, encode: Encode) -> tuple[Any, ...]:
    """The values for the columns of ``SELECT_KEYS``, in order (``receipt_updated_at`` as
    ``add_key`` stores it)."""
    return (
        key.key_id,
        key.app_id,
        key.platform,
        key.public_key,
        key.counter,
        key.environment,
        key.receipt,
        key.risk_metric,
        encode(key.created_at),
        encode(key.last_seen_at),
        _optional(encode, key.revoked_at),
        _optional(encode, receipt_updated_at(key)),
    )


def device_key_record(row: Sequence[Any], decode: Decode) -> DeviceKey:
    """A row of ``SELECT_KEYS``."""
    return DeviceKey(
        key_id=row[0],
        app_id=row[1],
        platform=row[2],
        public_key=bytes(row[3]),
        counter=row[4],
        environment=row[5],
        receipt=None if row[6] is None else bytes(row[6]),
        risk_metric=row[7],
        created_at=decode(row[8]),
        last_seen_at=decode(row[9]),
        revoked_at=_optional(decode, row[10]),
        receipt_updated_at=_optional(decode, row[11]),
    )


def challenge_record(value: str, row: Sequence[Any], decode: Decode) -> ChallengeRecord:
    """``purpose, key_id, created_at, expires_at`` of the challenge ``value``."""
    return ChallengeRecord(
        value=value,
        purpose=row[0],
        key_id=row[1],
        created_at=decode(row[2]),
        expires_at=decode(row[3]),
    )


def signing_key_params(record: SigningKeyRecord, encode: Encode) -> tuple[Any, ...]:
    """The values for ``kid, private_key_pem, created_at, retired_at``."""
    return (
        record.kid,
        record.private_key_pem,
        encode(record.created_at),
        _optional(encode, record.retired_at),
    )


def signing_key_record(row: Sequence[Any], decode: Decode) -> SigningKeyRecord:
    """A row of ``SELECT_SIGNING_KEYS``."""
    return SigningKeyRecord(
        kid=row[0],
        private_key_pem=bytes(row[1]),
        created_at=decode(row[2]),
        retired_at=_optional(decode, row[3]),
    )


def debug_token_params(record: DebugTokenRecord, encode: Encode) -> tuple[Any, ...]:
    """The values for ``token_id, app_id, name, secret_hash, created_at, revoked_at``."""
    return (
        record.token_id,
        record.app_id,
        record.name,
        record.secret_hash,
        encode(record.created_at),
        _optional(encode, record.revoked_at),
    )


def debug_token_record(row: Sequence[Any], decode: Decode) -> DebugTokenRecord:
    """A row of ``SELECT_DEBUG_TOKENS``."""
    return DebugTokenRecord(
        token_id=row[0],
        app_id=row[1],
        name=row[2],
        secret_hash=bytes(row[3]),
        created_at=decode(row[4]),
        revoked_at=_optional(decode, row[5]),
    )
