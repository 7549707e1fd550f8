"""The ``apple-assertion`` vector kind: Apple's assertion steps against the stored key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from appintegrity.apple import verify_assertion
from appintegrity.cli.vectors import (
    VectorFormatError,
    app_id_field,
    int_field,
    public_key_field,
    text_field,
)
from appintegrity.encoding import EncodingError, b64decode_lenient


def run(inputs: Mapping[str, object], verify_at: datetime) -> dict[str, object]:
    """Verify the vector's assertion; raise ``AppleVerificationError`` when it fails.

    Assertions carry no certificates, so ``verify_at`` does not enter the verdict.
    """
    del verify_at
    assertion = text_field(inputs, "assertion")
    public_key = public_key_field(inputs, "public_key")
    app_id = app_id_field(inputs)
    previous_counter = int_field(inputs, "previous_counter", minimum=0)
    client_data: str | bytes
    if ("client_data" in inputs) == ("client_data_b64" in inputs):
        raise VectorFormatError("input needs exactly one of client_data, client_data_b64")
    if "client_data" in inputs:
        client_data = text_field(inputs, "client_data")
    else:
        try:
            client_data = b64decode_lenient(text_field(inputs, "client_data_b64"))
        except EncodingError as exc:
            raise VectorFormatError(f"input.client_data_b64 is not base64 ({exc})") from exc
    result = verify_assertion(
        assertion,
        client_data=client_data,
        public_key=public_key,
        previous_counter=previous_counter,
        app_id=app_id,
    )
    conclusion: dict[str, object] = {
        "valid": True,
        "counter": result.counter,
        "app_id": result.app_id,
    }
    if result.extensions is not None:
        from appintegrity.cli.vectors.apple_attestation import json_safe

        conclusion["extensions"] = json_safe(dict(result.extensions))
    return conclusion
