"""A software Android device that makes Play Integrity tokens exactly as Google Play does.

Tokens are a compact JWS (ES256) of the verdict JSON, inside a compact JWE (A256KW / A256GCM),
built with joserfc, an independent JOSE implementation, under test keys with their Play Console
spellings. Any verdict can be produced, as can broken tokens (other algorithms, other keys) to
test refusals. Pair it with ``appintegrity.testing.fake_google.FakeGoogleServer`` to exercise the
``decodeIntegrityToken`` path.

    device = SoftwareAndroidDevice("com.example.app")
    token = device.request_integrity_token(request_hash=request_hash(body), device_labels=())
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from joserfc import jwe, jws
from joserfc.jwk import ECKey, OctKey

from appintegrity.encoding import b64url_encode
from appintegrity.google.token import PlayIntegrityKeys

__all__ = [
    "DEFAULT_DEVICE_LABELS",
    "PlayIntegrityTestKeys",
    "SoftwareAndroidDevice",
    "seal_payload",
]

DEFAULT_DEVICE_LABELS = ("MEETS_BASIC_INTEGRITY", "MEETS_DEVICE_INTEGRITY")
_ABSENT = object()


@dataclass(frozen=True)
class PlayIntegrityTestKeys:
    """A response encryption key and a signing key, like the pair Play Console manages."""

    decryption_key: bytes
    signing_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> PlayIntegrityTestKeys:
        return cls(os.urandom(32), ec.generate_private_key(ec.SECP256R1()))

    @property
    def decryption_key_b64(self) -> str:
        """As Play Console shows it: base64 (default flags) of the raw AES-256 key."""
        return base64.b64encode(self.decryption_key).decode("ascii")

    @property
    def verification_key_b64(self) -> str:
        """As Play Console shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self.signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def as_keys(self) -> PlayIntegrityKeys:
        return PlayIntegrityKeys(self.decryption_key, self.signing_key.public_key())


def _json_bytes(payload: Mapping[str, object] | bytes | str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _b64_json(header: Mapping[str, object]) -> str:
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))


def sign_jws_raw(
    payload: bytes, signing_key: ec.EllipticCurvePrivateKey, header: Mapping[str, object]
) -> str:
    """An ES256 signature under *any* header (e.g. ``alg: none``), to test header checks."""
    signing_input = f"{_b64_json(header)}.{b64url_encode(payload)}"
    r, s = decode_dss_signature(
        signing_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    )
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def encrypt_jwe_raw(plaintext: bytes, aes_key: bytes, header: Mapping[str, object]) -> str:
    """A256KW / A256GCM encryption under *any* header (e.g. ``enc: A128GCM``)."""
    header_b64 = _b64_json(header)
    content_key, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(content_key).encrypt(iv, plaintext, header_b64.encode("ascii"))
    return ".".join(
        [
            header_b64,
            b64url_encode(aes_key_wrap(aes_key, content_key)),
            b64url_encode(iv),
            b64url_encode(sealed[:-16]),
            b64url_encode(sealed[-16:]),
        ]
    )


def seal_payload(
    payload: Mapping[str, object] | bytes | str,
    *,
    decryption_key: bytes,
    signing_key: ec.EllipticCurvePrivateKey,
    jwe_header: Mapping[str, object] | None = None,
    jws_header: Mapping[str, object] | None = None,
) -> str:
    """Sign then encrypt ``payload`` as Play does; custom headers switch to the raw builders."""
    data = _json_bytes(payload)
    if jws_header is None:
        inner = jws.serialize_compact({"alg": "ES256"}, data, ECKey.import_key(signing_key))
    else:
        inner = sign_jws_raw(data, signing_key, jws_header)
    if jwe_header is None:
        return jwe.encrypt_compact(
            {"alg": "A256KW", "enc": "A256GCM"}, inner, OctKey.import_key(decryption_key)
        )
    return encrypt_jwe_raw(inner.encode("ascii"), decryption_key, jwe_header)


class SoftwareAndroidDevice:
    """One app installed on a (software) device: answers integrity requests with real tokens.

    Constructor arguments set the device's usual verdict; each request may override any part
    (see ``verdict_payload``).
    """

    def __init__(
        self,
        package_name: str,
        *,
        keys: PlayIntegrityTestKeys | None = None,
        certificate_digest: str | None = None,
        version_code: int = 1,
        device_labels: Sequence[str] | None = DEFAULT_DEVICE_LABELS,
        licensing: str = "LICENSED",
        play_protect: str | None = "NO_ISSUES",
        app_access: Sequence[str] | None = ("KNOWN_INSTALLED",),
        device_activity: str | None = "LEVEL_1",
        sdk_version: int = 34,
    ) -> None:
        self.package_name = package_name
        self.keys = keys or PlayIntegrityTestKeys.generate()
        self.certificate_digest = certificate_digest or b64url_encode(
            hashlib.sha256(os.urandom(32)).digest()
        )
        self.defaults: dict[str, object] = {
            "version_code": version_code,
            "device_labels": device_labels,
            "licensing": licensing,
            "play_protect": play_protect,
            "app_access": app_access,
            "device_activity": device_activity,
            "sdk_version": sdk_version,
        }

    def verdict_payload(
        self,
        *,
        request_hash: str | None = None,
        nonce: str | None = None,
        now: datetime | None = None,
        **overrides: object,
    ) -> dict[str, object]:
        """The verdict JSON Play would sign. Overrides (``None`` leaves a field out):

        ``request_package_name``, ``package_name`` (app), ``app_recognition``,
        ``certificate_digests``, ``version_code``, ``device_labels``, ``legacy_device_labels``,
        ``licensing``, ``play_protect``, ``app_access``, ``device_activity``, ``sdk_version``,
        ``age_seconds`` (how old the timestamp is), ``timestamp_millis`` (exact; int or str),
        ``testing`` (a license-tester response), ``extra`` (top-level sections merged in).
        """
        known = {
            "request_package_name", "package_name", "app_recognition", "certificate_digests",
            "version_code", "device_labels", "legacy_device_labels", "licensing", "play_protect",
            "app_access", "device_activity", "sdk_version", "age_seconds", "timestamp_millis",
            "testing", "extra",
        }  # fmt: skip
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown verdict overrides: {', '.join(sorted(unknown))}")
        spec: dict[str, object] = {**self.defaults, **overrides}

        def get(name: str, default: object = None) -> object:
            return spec.get(name, default)

        now_ms = int((now.timestamp() if now is not None else time.time()) * 1000)
        age = get("age_seconds", 0)
        assert isinstance(age, int | float)
        timestamp = get("timestamp_millis", _ABSENT)
        request: dict[str, object] = {
            "requestPackageName": get("request_package_name", self.package_name),
            # Google documents an int64 as a decimal string in JSON.
            "timestampMillis": str(now_ms - int(age * 1000)) if timestamp is _ABSENT else timestamp,
        }
        request = {name: value for name, value in request.items() if value is not None}
        if request_hash is not None:
            request["requestHash"] = request_hash
        if nonce is not None:
            request["nonce"] = nonce

        recognition = get("app_recognition", "PLAY_RECOGNIZED")
        app: dict[str, object] = {"appRecognitionVerdict": recognition}
        if recognition != "UNEVALUATED":  # Play leaves these out when the app is not evaluated
            app["packageName"] = get("package_name", self.package_name)
            digests = get("certificate_digests", [self.certificate_digest])
            if digests is not None:
                app["certificateSha256Digest"] = list(digests)  # type: ignore[call-overload]
            version = get("version_code")
            if version is not None:
                app["versionCode"] = str(version)
        app = {name: value for name, value in app.items() if value is not None}

        device: dict[str, object] = {}
        labels = get("device_labels")
        if labels:  # absent, not an empty list, when no label applies
            device["deviceRecognitionVerdict"] = list(labels)  # type: ignore[call-overload]
        legacy = get("legacy_device_labels")
        if legacy is not None:
            device["legacyDeviceRecognitionVerdict"] = list(legacy)  # type: ignore[call-overload]
        if get("sdk_version") is not None:
            device["deviceAttributes"] = {"sdkVersion": get("sdk_version")}
        if get("device_activity") is not None:
            device["recentDeviceActivity"] = {"deviceActivityLevel": get("device_activity")}

        environment: dict[str, object] = {}
        if get("play_protect") is not None:
            environment["playProtectVerdict"] = get("play_protect")
        apps = get("app_access")
        if apps is not None:
            environment["appAccessRiskVerdict"] = {"appsDetected": list(apps)} if apps else {}  # type: ignore[call-overload]

        licensing = get("licensing")
        payload: dict[str, object] = {
            "requestDetails": request,
            "appIntegrity": app,
            "deviceIntegrity": device,
            "accountDetails": {} if licensing is None else {"appLicensingVerdict": licensing},
        }
        if environment:
            payload["environmentDetails"] = environment
        if get("testing"):
            payload["testingDetails"] = {"isTestingResponse": True}
        extra = get("extra")
        if isinstance(extra, Mapping):
            payload.update(extra)
        return payload

    def seal(
        self,
        payload: Mapping[str, object] | bytes | str,
        *,
        jwe_header: Mapping[str, object] | None = None,
        jws_header: Mapping[str, object] | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        decryption_key: bytes | None = None,
    ) -> str:
        """Make a token of any payload; other headers or keys make tokens that must be refused."""
        return seal_payload(
            payload,
            decryption_key=decryption_key or self.keys.decryption_key,
            signing_key=signing_key or self.keys.signing_key,
            jwe_header=jwe_header,
            jws_header=jws_header,
        )

    def request_integrity_token(
        self,
        *,
        request_hash: str | None = None,
        nonce: str | None = None,
        now: datetime | None = None,
        verdict: Mapping[str, object] | None = None,
        **overrides: object,
    ) -> str:
        """A token as ``requestIntegrityToken`` (nonce) or a standard request (request hash)
        returns it; ``verdict`` replaces the whole payload."""
        payload = (
            dict(verdict)
            if verdict is not None
            else self.verdict_payload(request_hash=request_hash, nonce=nonce, now=now, **overrides)
        )
        return self.seal(payload)
