"""``appintegrity demo``: the whole system in one command, every step printed.

It starts the service on a random loopback port (temporary SQLite store, a throwaway App Attest
CA as trust root, throwaway Play Integrity keys), then walks a software iPhone and a software
Android phone through challenge → registration → assertion → app token → a protected request,
and shows a replayed assertion and a tampered payload being refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

IOS_APP = "DEMO123456.com.example.demo"
ANDROID_APP = "com.example.demo"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the service and walk software devices through it, step by step"
    )
    parser.set_defaults(func=main_guarded)


class _Failed(Exception):
    pass


class _Narrator:
    def __init__(self) -> None:
        self.step = 0

    def section(self, title: str) -> None:
        print(f"\n=== {title}")

    def say(self, text: str) -> None:
        self.step += 1
        print(f"\n[{self.step}] {text}")

    def show(self, label: str, value: object) -> None:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        print(textwrap.indent(f"{label}: {text}", "    "))


def _short(token: str) -> str:
    return token if len(token) <= 48 else f"{token[:24]}…{token[-12:]} ({len(token)} chars)"


def run(args: argparse.Namespace) -> int:
    import httpx

    from appintegrity.encoding import b64_encode, b64url_encode
    from appintegrity.google.nonce import request_hash
    from appintegrity.service import create_app, parse_config
    from appintegrity.service.server import BackgroundServer
    from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
    from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
    from appintegrity.tokens import AppTokenVerifier, StaticJwks, TokenError

    logging.getLogger("appintegrity").setLevel(logging.ERROR)
    out = _Narrator()
    with tempfile.TemporaryDirectory(prefix="appintegrity-demo-") as tmp:
        directory = Path(tmp)
        ca = AppAttestCA.generate()
        (directory / "demo-root.pem").write_bytes(ca.root_pem)
        play_keys = PlayIntegrityTestKeys.generate()
        digest = b64url_encode(hashlib.sha256(b"demo signing certificate").digest())
        issuer = "http://demo.appintegrity.invalid"
        config = parse_config(
            {
                "server": {"store": "sqlite:///demo.db", "issuer": issuer},
                "tokens": {"ttl_seconds": 900},
                "apps": [
                    {
                        "id": IOS_APP,
                        "platform": "ios",
                        "environment": "production",
                        "trust_roots": ["demo-root.pem"],
                    },
                    {
                        "id": ANDROID_APP,
                        "platform": "android",
                        "decryption_key": play_keys.decryption_key_b64,
                        "verification_key": play_keys.verification_key_b64,
                        "certificate_digests": [digest],
                    },
                ],
            },
            base_dir=directory,
            env={},
        )
        out.section("Starting the integrity service")
        with (
            BackgroundServer(create_app(config)) as server,
            httpx.Client(base_url=server.url, timeout=10) as http,
        ):
            print(f"    listening on {server.url} (store: SQLite in {directory})")
            print(
                "    trust root: a throwaway App Attest CA (test devices only, never in production)"
            )

            def call(path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
                response = http.post(path, json=body)
                shown = {k: (_short(v) if k == "token" else v) for k, v in body.items()}
                out.show(f"POST {path}", shown)
                result: dict[str, Any] = response.json()
                if isinstance(result.get("appToken"), str):
                    result = {**result, "appToken": _short(result["appToken"])}
                out.show(f"→ {response.status_code}", result)
                if response.status_code != expect:
                    raise _Failed(f"expected {expect} from {path}, got {response.status_code}")
                full: dict[str, Any] = response.json()
                return full

            def challenge(purpose: str) -> str:
                value: str = call("/v1/challenges", {"purpose": purpose}, 201)["challenge"]
                return value

            jwks = http.get("/.well-known/jwks.json").json()
            verifier = AppTokenVerifier(StaticJwks(jwks), issuer=issuer, audience=issuer)

            def protected_request(app_token: str, action: str) -> None:
                """What your API does: verify the app token locally against the JWKS."""
                try:
                    claims = verifier.verify(app_token)
                except TokenError as exc:
                    raise _Failed(f"the API refused the app token: {exc.code}") from exc
                out.show(
                    f"your API, '{action}' with X-App-Integrity: <appToken>",
                    f"verified locally against /.well-known/jwks.json → app {claims.subject}, "
                    f"platform {claims.platform}, decision {claims.decision}, "
                    f"expires {datetime.fromtimestamp(claims.expires_at, UTC):%H:%M:%S} UTC: "
                    "request served",
                )

            def refused(path: str, body: dict[str, Any], status: int, code: str) -> None:
                result = call(path, body, status)
                if result.get("error", {}).get("code") != code:
                    raise _Failed(f"expected {code}, got {result}")
                print(f"    REFUSED as expected: {code}")

            # -- iPhone ----------------------------------------------------------------------
            out.section("A software iPhone (App Attest)")
            phone = SoftwareIPhone(IOS_APP, ca=ca)
            out.say("The app makes a key in the Secure Enclave (DCAppAttestService.generateKey)")
            key_id = phone.generate_key()
            out.show("keyId", key_id)
            out.say("It asks the service for a one-time challenge")
            value = challenge("attestation")
            out.say("Apple attests the key over SHA-256(challenge); the app registers it")
            attestation = b64_encode(phone.attest_key(key_id, value))
            registration = call(
                "/v1/registrations",
                {
                    "platform": "ios",
                    "format": "apple-app-attest",
                    "keyId": key_id,
                    "challenge": value,
                    "token": attestation,
                },
                201,
            )
            protected_request(registration["appToken"], "open the app")

            out.say("Before a sensitive action: a fresh challenge, inside the payload it signs")
            value = challenge("assertion")
            payload = json.dumps({"action": "redeem", "credits": 50, "challenge": value})
            assertion = {
                "platform": "ios",
                "format": "apple-app-attest",
                "keyId": key_id,
                "payload": payload,
                "token": b64_encode(phone.generate_assertion(key_id, payload)),
            }
            result = call("/v1/assertions", assertion, 200)
            protected_request(result["appToken"], "redeem 50 credits")

            out.say("An attacker replays the same assertion")
            refused("/v1/assertions", assertion, 409, "challenge.consumed")

            out.say("An attacker changes the payload of a fresh, signed assertion (50 → 5000)")
            value = challenge("assertion")
            payload = json.dumps({"action": "redeem", "credits": 50, "challenge": value})
            signed = b64_encode(phone.generate_assertion(key_id, payload))
            tampered = payload.replace('"credits": 50', '"credits": 5000')
            refused(
                "/v1/assertions",
                {**assertion, "payload": tampered, "token": signed},
                401,
                "apple.signature_invalid",
            )

            # -- Android ---------------------------------------------------------------------
            out.section("A software Android phone (Play Integrity)")
            device = SoftwareAndroidDevice(ANDROID_APP, keys=play_keys, certificate_digest=digest)
            out.say("A challenge, a payload carrying it, requestHash = base64url(SHA-256(payload))")
            value = challenge("assertion")
            payload = json.dumps({"action": "transfer", "amount": 20, "challenge": value})
            binding = request_hash(payload)
            out.show("requestHash", binding)
            out.say("Play Integrity returns a token bound to that hash; the app sends it")
            android = {
                "platform": "android",
                "format": "google-play-integrity",
                "payload": payload,
                "token": device.request_integrity_token(request_hash=binding),
            }
            result = call("/v1/assertions", android, 200)
            protected_request(result["appToken"], "transfer 20")

            out.say("An attacker replays the token")
            refused("/v1/assertions", android, 409, "challenge.consumed")

            out.say("An attacker changes the amount in a fresh request (20 → 2000)")
            value = challenge("assertion")
            payload = json.dumps({"action": "transfer", "amount": 20, "challenge": value})
            token = device.request_integrity_token(request_hash=request_hash(payload))
            refused(
                "/v1/assertions",
                {
                    **android,
                    "payload": payload.replace('"amount": 20', '"amount": 2000'),
                    "token": token,
                },
                401,
                "google.request_hash_mismatch",
            )

            out.section("Done")
            print(
                "    Every genuine request got an app token; every replay and tamper was refused."
            )
    return 0


def main_guarded(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except _Failed as exc:
        print(f"\nDEMO FAILED: {exc}")
        return 1
