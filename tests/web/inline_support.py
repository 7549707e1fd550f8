"""Shared pieces for the inline-mode adapter tests: a real SQLite store with a registered
App Attest key, a software iPhone and Android device, and the outcome matrix every adapter
(ASGI, WSGI, Flask, Django) must answer identically."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from appintegrity.apple import AppAttestVerifier
from appintegrity.encoding import b64_encode
from appintegrity.google import PlayIntegrityPolicy, PlayIntegrityVerifier
from appintegrity.google.nonce import request_hash
from appintegrity.store import DeviceKey, open_store
from appintegrity.testing.android import PlayIntegrityTestKeys, SoftwareAndroidDevice
from appintegrity.testing.ios import AppAttestCA, SoftwareIPhone
from appintegrity.web import Mode, RoutePolicy, WebMetrics
from appintegrity.web.inline import (
    ASSERTION_HEADER,
    KEY_ID_HEADER,
    PLAY_INTEGRITY_HEADER,
    InlineProtector,
    InlineVerifier,
)

IOS_APP = "TEAM123456.com.example.app"
ANDROID_APP = "com.example.app"
BODY = b'{"item":"gold","quantity":1}'
MAX_BODY = 2048  # small, so the over-the-limit case stays cheap

# Every adapter's test app serves these; the handler answers {"platform", "decision", "echo"}.
ROUTES: dict[str, RoutePolicy | None] = {
    "/buy": RoutePolicy(),
    "/browse": RoutePolicy(accept_limit=True),
    "/open": None,
}


class Rig:
    """A store with one registered iPhone key, the two devices, and a fresh metrics registry."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = open_store(f"sqlite:///{tmp_path / 'inline.db'}")
        ca = AppAttestCA.generate()
        self.phone = SoftwareIPhone(IOS_APP, ca=ca)
        self.key_id = self.phone.generate_key()
        now = datetime.now(UTC)
        # What the service's registration would have stored for this key.
        key = DeviceKey(
            key_id=self.key_id,
            app_id=IOS_APP,
            platform="ios",
            public_key=self.phone.public_key(self.key_id),
            counter=0,
            environment="production",
            receipt=None,
            risk_metric=None,
            created_at=now,
            last_seen_at=now,
        )
        assert asyncio.run(self.store.add_key(key))
        self.android = SoftwareAndroidDevice(ANDROID_APP, keys=PlayIntegrityTestKeys.generate())
        policy = PlayIntegrityPolicy(
            package_name=ANDROID_APP, certificate_digests=(self.android.certificate_digest,)
        )
        self.verifier = InlineVerifier(
            self.store,
            apple=AppAttestVerifier(IOS_APP, trust_roots=ca.trust_roots),
            google=PlayIntegrityVerifier(policy, keys=self.android.keys.as_keys()),
        )
        self.metrics = WebMetrics(CollectorRegistry())

    def protector(self, mode: Mode = Mode.ENFORCE) -> InlineProtector:
        return InlineProtector(
            self.verifier, mode=mode, metrics=self.metrics, max_body_bytes=MAX_BODY
        )

    def assertion_headers(self, body: bytes = BODY, key_id: str | None = None) -> dict[str, str]:
        key_id = key_id or self.key_id
        assertion = self.phone.generate_assertion(key_id, body)
        return {KEY_ID_HEADER: key_id, ASSERTION_HEADER: b64_encode(assertion)}

    def play_headers(self, body: bytes = BODY, **overrides: object) -> dict[str, str]:
        token = self.android.request_integrity_token(
            request_hash=request_hash(body),
            now=datetime.now(UTC),
            **overrides,  # type: ignore[arg-type]
        )
        return {PLAY_INTEGRITY_HEADER: token}

    def stranger_headers(self) -> dict[str, str]:
        """A genuine assertion from a key that was never registered."""
        return self.assertion_headers(key_id=self.phone.generate_key())

    def revoke(self) -> None:
        asyncio.run(self.store.revoke_key(self.key_id, datetime.now(UTC)))

    def counter(self) -> int:
        stored = asyncio.run(self.store.get_key(self.key_id))
        assert stored is not None
        return stored.counter

    def close(self) -> None:
        self.verifier.close()
        asyncio.run(self.store.close())


@dataclass(frozen=True)
class Case:
    """One request and what enforcement answers; ``reason`` is the metrics label.

    ``replay``: the same request is sent twice, the first must pass (in both modes).
    ``setup`` runs before the request (e.g. revoking the key). ``platform`` and ``decision``
    are what the handler sees when the request passes (in monitor mode a failed proof is None,
    except a ``limit`` decision, which verified).
    """

    name: str
    path: str
    headers: Callable[[Rig], dict[str, str]]
    status: int
    code: str | None
    reason: str
    platform: str | None = None
    decision: str | None = None
    body: bytes = BODY
    replay: bool = False
    setup: Callable[[Rig], None] | None = None


CASES = [
    Case(
        "ios_valid", "/buy", lambda r: r.assertion_headers(), 200, None, "verified", "ios", "allow"
    ),
    Case(
        "ios_body_at_limit",
        "/buy",
        lambda r: r.assertion_headers(b"x" * MAX_BODY),
        200,
        None,
        "verified",
        "ios",
        "allow",
        body=b"x" * MAX_BODY,
    ),
    Case(
        "ios_replayed",
        "/buy",
        lambda r: r.assertion_headers(),
        401,
        "apple.counter_invalid",
        "replayed",
        replay=True,
    ),
    Case(
        "ios_other_body",
        "/buy",
        lambda r: r.assertion_headers(b'{"item":"gold","quantity":1000}'),
        401,
        "apple.signature_invalid",
        "invalid",
    ),
    Case("ios_unknown_key", "/buy", Rig.stranger_headers, 401, "key.unknown", "unknown_key"),
    Case(
        "ios_revoked_key",
        "/buy",
        lambda r: r.assertion_headers(),
        403,
        "key.revoked",
        "revoked",
        setup=Rig.revoke,
    ),
    Case(
        "ios_key_id_missing",
        "/buy",
        lambda r: {ASSERTION_HEADER: r.assertion_headers()[ASSERTION_HEADER]},
        401,
        "token.missing",
        "missing",
    ),
    Case(
        "android_valid",
        "/buy",
        lambda r: r.play_headers(),
        200,
        None,
        "verified",
        "android",
        "allow",
    ),
    Case(
        "android_replayed",
        "/buy",
        lambda r: r.play_headers(),
        409,
        "token.consumed",
        "consumed",
        replay=True,
    ),
    Case(
        "android_other_body",
        "/buy",
        lambda r: r.play_headers(b"something else"),
        401,
        "google.request_hash_mismatch",
        "invalid",
    ),
    Case(
        "android_blocked_verdict",
        "/buy",
        lambda r: r.play_headers(licensing="UNLICENSED"),
        403,
        "google.unlicensed",
        "invalid",
    ),
    Case(
        "android_limit_refused",
        "/buy",
        lambda r: r.play_headers(play_protect="HIGH_RISK"),
        403,
        "token.limited_decision",
        "limited",
        "android",
        "limit",
    ),
    Case(
        "android_limit_accepted",
        "/browse",
        lambda r: r.play_headers(play_protect="HIGH_RISK"),
        200,
        None,
        "verified",
        "android",
        "limit",
    ),
    Case("missing_headers", "/buy", lambda r: {}, 401, "token.missing", "missing"),
    Case(
        "body_over_limit",
        "/buy",
        lambda r: r.assertion_headers(b"x" * (MAX_BODY + 1)),
        413,
        "request.too_large",
        "too_large",
        body=b"x" * (MAX_BODY + 1),
    ),
]

# What the handler sees for a request that passed without a verified proof (monitor mode).
_NO_PROOF = {"platform": None, "decision": None}

Send = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, object]]]


def run_case(rig: Rig, case: Case, mode: Mode, send: Send) -> None:
    """Send ``case`` through an adapter (``send(path, headers, body) -> (status, json)``) and
    assert the answer, what the handler saw, the stored counter, and what was counted."""
    if case.setup is not None:
        case.setup(rig)
    headers = case.headers(rig)
    if case.replay:
        status, first = send(case.path, headers, case.body)
        assert status == 200 and first["platform"] is not None, (case.name, status, first)
    status, answer = send(case.path, headers, case.body)
    # Monitor mode lets everything through but a body it could not read.
    expected_status = case.status if mode is Mode.ENFORCE or case.status == 413 else 200
    assert status == expected_status, (case.name, status, answer)
    if status == 200:
        seen = {"platform": answer["platform"], "decision": answer["decision"]}
        if case.status == 200 or case.code == "token.limited_decision":
            assert seen == {"platform": case.platform, "decision": case.decision}, case.name
        else:
            assert seen == _NO_PROOF, case.name
        assert answer["echo"] == case.body.decode(), case.name  # the app still reads the body
    else:
        assert answer == {"error": {"code": case.code, "message": answer["error"]["message"]}}  # type: ignore[index]
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]  # type: ignore[index]
    if case.name.startswith("ios_"):
        # Only a verified assertion moves the stored counter.
        expected = 1 if case.status == 200 or case.replay else 0
        assert rig.counter() == expected, (case.name, rig.counter())
    result = "verified" if case.reason == "verified" else "unverified"
    action = "allowed" if status == 200 else "refused"
    counted = rig.metrics.count(
        route=case.path, mode=mode.value, result=result, reason=case.reason, action=action
    )
    assert counted == 1, (case.name, counted)
