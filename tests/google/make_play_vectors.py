"""Regenerate ``tests/google/vectors/*.json`` with the test kit (run this file with Python).

One valid standard case, one valid classic case, one valid-but-limited case, and one case per
rejection reason, all under one throwaway key pair (its Play Console spellings are in each file).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appintegrity.google.nonce import content_binding, request_hash
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice

HERE = Path(__file__).resolve().parent / "vectors"
VERIFY_AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PACKAGE = "com.example.vectors"


def main() -> None:
    keys = PlayIntegrityTestKeys.generate()
    other = PlayIntegrityTestKeys.generate()
    device = SoftwareAndroidDevice(PACKAGE, keys=keys, version_code=7)
    issued = VERIFY_AT - timedelta(seconds=20)
    body_hash = request_hash(b'{"action":"transfer","amount":100}')
    nonce = content_binding({"action": "login", "unique": "bXktdW5pcXVlLXZhbHVlLTEyMzQ"})

    def case(
        name: str, description: str, token: str, expect: dict[str, object], **extra: object
    ) -> None:
        inputs: dict[str, object] = {
            "token": token,
            "decryption_key": keys.decryption_key_b64,
            "verification_key": keys.verification_key_b64,
            "package_name": PACKAGE,
            "certificate_digests": [device.certificate_digest],
            "max_age_seconds": 300,
        }
        if "nonce" in extra:
            inputs["nonce"] = extra.pop("nonce")
        else:
            inputs["request_hash"] = extra.pop("request_hash", body_hash)
        inputs.update(extra)
        document = {
            "kind": "play-integrity",
            "description": description,
            "source": "appintegrity test kit (tests/google/make_play_vectors.py)",
            "verify_at": VERIFY_AT.isoformat().replace("+00:00", "Z"),
            "input": inputs,
            "expect": expect,
        }
        (HERE / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")

    def token(**overrides: object) -> str:
        binding = overrides.pop("nonce", None)
        if binding is not None:
            return device.request_integrity_token(nonce=str(binding), now=issued, **overrides)
        return device.request_integrity_token(request_hash=body_hash, now=issued, **overrides)

    def invalid(reason: str) -> dict[str, object]:
        return {"valid": False, "reason": reason}

    HERE.mkdir(exist_ok=True)
    case(
        "valid-standard",
        "Genuine standard request: every check passes",
        token(),
        {"valid": True, "decision": "allow"},
    )
    case(
        "valid-classic-nonce",
        "Genuine classic request bound by a content-binding nonce",
        token(nonce=nonce),
        {"valid": True, "decision": "allow"},
        nonce=nonce,
    )
    case(
        "valid-limited-play-protect",
        "Valid, but Play Protect reports HIGH_RISK: limit",
        token(play_protect="HIGH_RISK"),
        {"valid": True, "decision": "limit"},
    )
    case("malformed", "Not a compact JWE", "not-a-token", invalid("google.malformed"))
    case(
        "decryption-failed",
        "Encrypted with another app's key",
        device.seal(
            device.verdict_payload(request_hash=body_hash, now=issued),
            decryption_key=other.decryption_key,
        ),
        invalid("google.decryption_failed"),
    )
    case(
        "signature-invalid",
        "Signed with another key",
        device.seal(
            device.verdict_payload(request_hash=body_hash, now=issued),
            signing_key=other.signing_key,
        ),
        invalid("google.signature_invalid"),
    )
    case(
        "package-mismatch",
        "Token requested by another package",
        token(request_package_name="com.example.other", package_name="com.example.other"),
        invalid("google.package_mismatch"),
    )
    case(
        "request-hash-mismatch",
        "Bound to another request body",
        token(),
        invalid("google.request_hash_mismatch"),
        request_hash=request_hash(b'{"action":"transfer","amount":9999}'),
    )
    case(
        "nonce-mismatch",
        "Classic token bound to another nonce",
        token(nonce=content_binding({"action": "login", "unique": "other"})),
        invalid("google.nonce_mismatch"),
        nonce=nonce,
    )
    case(
        "stale",
        "Issued ten minutes before verify_at (max age 300 s)",
        token(age_seconds=580),
        invalid("google.stale"),
    )
    case(
        "app-not-recognized",
        "A sideloaded build: UNRECOGNIZED_VERSION",
        token(app_recognition="UNRECOGNIZED_VERSION"),
        invalid("google.app_not_recognized"),
    )
    case(
        "certificate-mismatch",
        "Re-signed with another certificate",
        token(certificate_digests=[request_hash(b"another certificate")]),
        invalid("google.certificate_mismatch"),
    )
    case(
        "device-integrity-insufficient",
        "Only basic integrity (e.g. unlocked bootloader)",
        token(device_labels=["MEETS_BASIC_INTEGRITY"]),
        invalid("google.device_integrity_insufficient"),
    )
    case(
        "unlicensed",
        "Installed from outside Play",
        token(licensing="UNLICENSED"),
        invalid("google.unlicensed"),
    )
    case("replayed-standard-cleared", "Google's answer to a second decode: cleared verdicts",
         token(app_recognition="UNEVALUATED", device_labels=None, licensing="UNEVALUATED",
               play_protect="UNEVALUATED", app_access=None, device_activity=None, sdk_version=None),
         invalid("google.app_not_recognized"))  # fmt: skip


if __name__ == "__main__":
    main()
