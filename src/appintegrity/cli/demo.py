"""``appintegrity demo``: the whole system in one command, every step printed.

It starts the service on a random loopback port (temporary SQLite store, a throwaway App Attest
CA as trust root, throwaway Play Integrity keys), then walks a software iPhone and a software
Android phone through challenge → registration → assertion → app token → a protected request,
and shows a replayed assertion and a tampered payload being refused. The devices speak through
the test kit's ``IntegrityClient``, the same calls a backend's own tests can make.
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

from appintegrity.errors import AppIntegrityError

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

    from appintegrity.encoding import b64url_encode
    from appintegrity.google.nonce import request_hash
    from appintegrity.service import create_app, parse_config
    from appintegrity.service.server import BackgroundServer
    from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
    from appintegrity.testing.client import ASSERTIONS, IntegrityClient, ServiceRefusal
    from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
    from appintegrity.testing.receipts import ReceiptAuthority
    from appintegrity.tokens import AppTokenVerifier, StaticJwks, TokenError

    logging.getLogger("appintegrity").setLevel(logging.ERROR)
    out = _Narrator()

    # The devices talk through the test kit's IntegrityClient; these hooks print every
    # request and answer it exchanges, so the demo shows the wire contract as it happens.
    def show_request(request: httpx.Request) -> None:
        body = json.loads(request.content) if request.content else {}
        if isinstance(body, dict):
            body = {k: (_short(v) if k == "token" else v) for k, v in body.items()}
        out.show(f"{request.method} {request.url.path}", body)

    def show_response(response: httpx.Response) -> None:
        response.read()
        try:
            result = response.json()
        except ValueError:
            result = response.text
        if isinstance(result, dict) and isinstance(result.get("appToken"), str):
            result = {**result, "appToken": _short(result["appToken"])}
        out.show(f"→ {response.status_code}", result)

    with tempfile.TemporaryDirectory(prefix="appintegrity-demo-") as tmp:
        directory = Path(tmp)
        ca = AppAttestCA.generate()
        (directory / "demo-root.pem").write_bytes(ca.root_pem)
        receipts = ReceiptAuthority()  # stands in for Apple's fraud receipt signer
        (directory / "demo-receipt-root.pem").write_text(receipts.root_pem)
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
                        "receipt_trust_roots": ["demo-receipt-root.pem"],
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
            httpx.Client(timeout=10) as plain,
            httpx.Client(
                timeout=10,
                event_hooks={"request": [show_request], "response": [show_response]},
            ) as narrated,
        ):
            print(f"    listening on {server.url} (store: SQLite in {directory})")
            print(
                "    trust root: a throwaway App Attest CA (test devices only, never in production)"
            )
            client = IntegrityClient(server.url, http=narrated)

            jwks = plain.get(f"{server.url}/.well-known/jwks.json").json()
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

            def refused(body: dict[str, object], status: int, code: str) -> None:
                try:
                    result = client.post_json(ASSERTIONS, body)
                except ServiceRefusal as exc:
                    if (exc.status, exc.code) != (status, code):
                        raise _Failed(f"expected {status} {code}, got {exc}") from exc
                    print(f"    REFUSED as expected: {code}")
                    return
                raise _Failed(f"expected {code}, got {result}")

            # -- iPhone ----------------------------------------------------------------------
            out.section("A software iPhone (App Attest)")
            phone = SoftwareIPhone(IOS_APP, ca=ca, receipt_factory=receipts.attestation_receipt)
            out.say("The app makes a key in the Secure Enclave (DCAppAttestService.generateKey)")
            key_id = phone.generate_key()
            out.show("keyId", key_id)
            out.say(
                "It asks the service for a one-time challenge; Apple attests the key over "
                "SHA-256(challenge); the app registers it"
            )
            registration = client.register_iphone(phone, key_id=key_id)
            protected_request(registration.app_token.token, "open the app")

            out.say("Before a sensitive action: a fresh challenge, inside the payload it signs")
            redeem = {"action": "redeem", "credits": 50}
            assertion = client.ios_assertion_request(phone, key_id, payload=redeem)
            result = client.post_json(ASSERTIONS, assertion)
            protected_request(str(result["appToken"]), "redeem 50 credits")

            out.say("An attacker replays the same assertion")
            refused(assertion, 409, "challenge.consumed")

            out.say("An attacker changes the payload of a fresh, signed assertion (50 → 5000)")
            signed = client.ios_assertion_request(phone, key_id, payload=redeem)
            tampered = str(signed["payload"]).replace('"credits": 50', '"credits": 5000')
            refused({**signed, "payload": tampered}, 401, "apple.signature_invalid")

            # -- Android ---------------------------------------------------------------------
            out.section("A software Android phone (Play Integrity)")
            device = SoftwareAndroidDevice(ANDROID_APP, keys=play_keys, certificate_digest=digest)
            out.say("A challenge, a payload carrying it, requestHash = base64url(SHA-256(payload))")
            transfer = {"action": "transfer", "amount": 20}
            android = client.android_assertion_request(device, payload=transfer)
            out.show("payload", android["payload"])
            out.show("requestHash", request_hash(str(android["payload"])))
            out.say("Play Integrity returns a token bound to that hash; the app sends it")
            result = client.post_json(ASSERTIONS, android)
            protected_request(str(result["appToken"]), "transfer 20")

            out.say("An attacker replays the token")
            refused(android, 409, "challenge.consumed")

            out.say("An attacker changes the amount in a fresh request (20 → 2000)")
            fresh = client.android_assertion_request(device, payload=transfer)
            changed = str(fresh["payload"]).replace('"amount": 20', '"amount": 2000')
            refused({**fresh, "payload": changed}, 401, "google.request_hash_mismatch")

            out.section("Done")
            print(
                "    Every genuine request got an app token; every replay and tamper was refused."
            )
    return 0


def main_guarded(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except (_Failed, AppIntegrityError) as exc:
        print(f"\nDEMO FAILED: {exc}")
        return 1
