"""``appintegrity inspect`` for Play Integrity tokens: show a token to a person, or as JSON.

With both Play Console keys the token is decrypted and its signature verified before anything is
shown; without keys only the (unencrypted) JWE header can be read. Standard-request tokens under
Google-managed keys can only be read by Google's decodeIntegrityToken.
"""

from __future__ import annotations

import json

from appintegrity.errors import ConfigError, GoogleVerificationError
from appintegrity.google.token import PlayIntegrityKeys, decode_token_locally, read_jwe_header
from appintegrity.google.verdict import IntegrityVerdict

__all__ = ["explain", "failure"]

_NO_KEYS_HINT = (
    "The verdict is encrypted. Give the Play Console response keys (decryption and verification) "
    "to decrypt it; tokens under Google-managed keys can only be decoded by Google."
)


def explain(
    token: str,
    *,
    decryption_key: str | None,
    verification_key: str | None,
    as_json: bool,
) -> tuple[int, str]:
    """Return (exit status, text): 0 and the verdict (or header), 1 and a message on failure."""
    token = token.strip()
    try:
        header = read_jwe_header(token)
        if decryption_key is None and verification_key is None:
            return 0, _header_only(header, as_json)
        if decryption_key is None or verification_key is None:
            message = "give both the decryption key and the verification key"
            return 1, failure(None, message, as_json)
        keys = PlayIntegrityKeys.from_base64(decryption_key, verification_key)
        payload = decode_token_locally(token, keys)
        verdict = IntegrityVerdict.from_payload(payload)
    except GoogleVerificationError as exc:
        return 1, failure(exc.reason, exc.message, as_json)
    except ConfigError as exc:
        return 1, failure(exc.code, exc.message, as_json)
    if as_json:
        document = {
            "kind": "play-integrity",
            "verified": True,
            "header": header,
            "summary": verdict.summary(),
            "payload": dict(payload),
        }
        return 0, json.dumps(document, indent=2, sort_keys=True)
    return 0, _describe(verdict, header)


def failure(reason: str | None, message: str, as_json: bool) -> str:
    """What ``inspect`` prints when it cannot explain its input, for App Attest objects too:
    ``{"error": message, "reason": code or null}`` (on stdout) with ``--json``, else a line
    for stderr."""
    if as_json:
        return json.dumps({"error": message, "reason": reason}, indent=2)
    return f"error: {reason}: {message}" if reason else f"error: {message}"


def _header_only(header: dict[str, object], as_json: bool) -> str:
    if as_json:
        document = {"kind": "play-integrity", "verified": False, "header": header}
        return json.dumps(document, indent=2, sort_keys=True)
    fields = ", ".join(f"{k}={v}" for k, v in sorted(header.items()))
    return f"Play Integrity token (compact JWE)\n  header: {fields}\n{_NO_KEYS_HINT}"


def _describe(verdict: IntegrityVerdict, header: dict[str, object]) -> str:
    request = verdict.request_details
    app = verdict.app_integrity
    device = verdict.device_integrity
    environment = verdict.environment_details
    level = device.level
    binding = (
        f"requestHash {request.request_hash}"
        if request.request_hash is not None
        else f"nonce {request.nonce}"
        if request.nonce is not None
        else "none"
    )
    lines = [
        f"Play Integrity verdict (decrypted, signature verified; {header.get('alg')}/"
        f"{header.get('enc')} + ES256)",
        "Request",
        f"  package:    {request.request_package_name}",
        f"  binding:    {binding}",
        f"  issued at:  {request.timestamp.isoformat().replace('+00:00', 'Z')}",
        "App",
        f"  recognition: {app.app_recognition_verdict}",
        f"  package:     {app.package_name or '-'}",
        f"  version:     {app.version_code if app.version_code is not None else '-'}",
        f"  certificate: {', '.join(app.certificate_sha256_digest) or '-'}",
        "Device",
        f"  labels:      {', '.join(device.device_recognition_verdict) or 'none'}"
        f" (level: {level.value if level else 'none'})",
        f"  activity:    {device.device_activity_level or '-'}",
        f"  sdk:         {device.sdk_version if device.sdk_version is not None else '-'}",
        "Account",
        f"  licensing:   {verdict.account_details.app_licensing_verdict}",
        "Environment",
        f"  play protect: {environment.play_protect_verdict or '-'}",
    ]
    risk = environment.app_access_risk
    lines.append(
        f"  apps detected: {', '.join(risk.apps_detected) or 'none' if risk is not None else '-'}"
    )
    if verdict.testing_details is not None and verdict.testing_details.is_testing_response:
        lines.append("Testing: this is a license-tester response")
    if verdict.extra:
        lines.append(f"Other sections: {', '.join(sorted(verdict.extra))}")
    return "\n".join(lines)
