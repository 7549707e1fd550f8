"""Per-app verifiers built once from the configuration.

iOS requests do not say which app they come from: an attestation names its app by the RP ID
hash (SHA-256 of ``TEAMID.bundleId``) in its authenticator data, and an assertion by the key it
was made with. Android requests name it by ``appId`` when several Android apps share a service.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from appintegrity.apple.attestation import AppAttestVerifier
from appintegrity.apple.receipt_refresh import ReceiptRefreshClient
from appintegrity.errors import Code, ConfigError, GoogleVerificationError, Reason
from appintegrity.google import (
    GoogleApiDecoder,
    IntegrityVerdict,
    PlayIntegrityKeys,
    PlayIntegrityPolicy,
    PlayIntegrityVerifier,
    PolicyResult,
    evaluate_verdict,
)
from appintegrity.service.config import AndroidAppConfig, IosAppConfig, ServiceConfig
from appintegrity.service.errors import service_error

log = logging.getLogger("appintegrity.service")

# Verdict reasons that mean "this token is not about this request": a hard refusal (401) in
# every mode, never a policy decision that monitor mode could wave through.
BINDING_REASONS = frozenset(
    {
        Reason.GOOGLE_PACKAGE_MISMATCH,
        Reason.GOOGLE_REQUEST_HASH_MISMATCH,
        Reason.GOOGLE_NONCE_MISMATCH,
        Reason.GOOGLE_STALE,
    }
)


@dataclass(frozen=True)
class IosApp:
    config: IosAppConfig
    verifier: AppAttestVerifier
    rp_id_hash: bytes
    # Roots receipts chain to (None: Apple Root CA - G3), and the refresh client when
    # [apps.receipt_refresh] is configured.
    receipt_roots: tuple[x509.Certificate, ...] | None = None
    refresh_client: ReceiptRefreshClient | None = None


@dataclass(frozen=True)
class AndroidApp:
    config: AndroidAppConfig
    verifier: PlayIntegrityVerifier

    async def verify(self, token: str, *, expected: str, now: datetime) -> PolicyResult:
        """Read the token and apply the policy, binding to ``expected`` whichever way the
        token was made: ``requestHash`` (standard requests) or ``nonce`` (classic)."""
        verifier = self.verifier
        # The request does not say which kind of token it carries: with both paths configured,
        # the local keys try first and a token they cannot decrypt (standard) goes to Google.
        verdict = IntegrityVerdict.from_payload(await verifier.read_token(token))
        details = verdict.request_details
        if details.request_hash is None and details.nonce is not None:
            result = evaluate_verdict(verdict, verifier.policy, now=now, nonce=expected)
        else:
            result = evaluate_verdict(verdict, verifier.policy, now=now, request_hash=expected)
        for reason in result.reasons:
            if reason in BINDING_REASONS:
                raise GoogleVerificationError(reason, _binding_message(reason))
        return result


def _binding_message(reason: str) -> str:
    messages: dict[str, str] = {
        Reason.GOOGLE_PACKAGE_MISMATCH: "the token was made for another package",
        Reason.GOOGLE_REQUEST_HASH_MISMATCH: (
            "the token's requestHash is not base64url(SHA-256(payload))"
        ),
        Reason.GOOGLE_NONCE_MISMATCH: "the token's nonce is not base64url(SHA-256(payload))",
        Reason.GOOGLE_STALE: "the token is older than the policy allows",
    }
    return messages.get(reason, reason)


def _load_roots(
    app: IosAppConfig, paths: list[Path], key: str = "trust_roots", what: str = ""
) -> list[x509.Certificate] | None:
    if not paths:
        return None
    roots = []
    for path in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"apps[{app.id}].{key}: cannot load {path}: {exc}") from exc
    log.warning(
        "app %s trusts %d configured root(s) instead of Apple's%s: use this with test CAs only",
        app.id,
        len(roots),
        what,
    )
    return roots


def _refresh_client(app: IosAppConfig) -> ReceiptRefreshClient | None:
    refresh = app.receipt_refresh
    if refresh is None:
        return None
    path = refresh.devicecheck_private_key_file
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"receipt_refresh.devicecheck_private_key_file: cannot read {path}: {exc}"
        ) from exc
    try:
        return ReceiptRefreshClient(
            team_id=refresh.team_id,
            key_id=refresh.devicecheck_key_id,
            private_key_pem=pem,
            environment=refresh.environment or app.environment,
            base_url=refresh.base_url,
            timeout=refresh.timeout_seconds,
            retries=refresh.retries,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # Never echo the key file's content: only its path and what is wrong with it.
        raise ConfigError(
            f"receipt_refresh.devicecheck_private_key_file: {path} is not a DeviceCheck key "
            f"(an unencrypted EC P-256 private key in PEM, AuthKey_<key id>.p8): "
            f"{type(exc).__name__}"
        ) from None


def _android_verifier(app: AndroidAppConfig) -> PlayIntegrityVerifier:
    mapping = dict(app.policy)
    mapping.setdefault("package_name", app.id)
    policy = PlayIntegrityPolicy.from_mapping(mapping)
    if not policy.certificate_digests:
        log.warning(
            "app %s has no certificate_digests: a re-signed copy of the app passes the"
            " signing-certificate check; list your signing certificate's SHA-256",
            app.id,
        )
    keys = None
    decoder = None
    if app.decryption_key is not None and app.verification_key is not None:
        keys = PlayIntegrityKeys.from_base64(app.decryption_key, app.verification_key)
    if app.service_account_file is not None:
        # Both may be configured: classic tokens under the local keys, standard ones via Google.
        decoder = GoogleApiDecoder(
            service_account_file=str(app.service_account_file),
            base_url=app.google_api_base_url or "https://playintegrity.googleapis.com",
            token_uri=app.google_token_uri,
        )
    elif keys is None:
        raise ConfigError(f"apps[{app.id}]: service_account_file is required")
    return PlayIntegrityVerifier(policy, keys=keys, decoder=decoder)


class Apps:
    """The configured apps and their verifiers."""

    def __init__(self, config: ServiceConfig) -> None:
        self.ios_apps: dict[str, IosApp] = {}
        self.android_apps: dict[str, AndroidApp] = {}
        for app in config.apps:
            try:
                if isinstance(app, IosAppConfig):
                    verifier = AppAttestVerifier(
                        app.id,
                        environment=app.environment,
                        trust_roots=_load_roots(app, app.trust_roots),
                    )
                    receipt_roots = _load_roots(
                        app, app.receipt_trust_roots, "receipt_trust_roots", " for receipts"
                    )
                    self.ios_apps[app.id] = IosApp(
                        app,
                        verifier,
                        hashlib.sha256(app.id.encode("utf-8")).digest(),
                        receipt_roots=tuple(receipt_roots) if receipt_roots else None,
                        refresh_client=_refresh_client(app),
                    )
                else:
                    self.android_apps[app.id] = AndroidApp(app, _android_verifier(app))
            except ConfigError as exc:
                raise ConfigError(f"apps[{app.id}]: {exc.message}") from exc
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"apps[{app.id}]: {exc}") from exc
        self._by_rp_id_hash = {app.rp_id_hash: app for app in self.ios_apps.values()}
        self._public_keys: OrderedDict[bytes, ec.EllipticCurvePublicKey] = OrderedDict()

    def ios_for_attestation(self, attestation: bytes) -> IosApp:
        """The app an attestation claims (by RP ID hash). This only routes: the chosen app's
        verifier checks everything, and an unknown hash goes to the first app's verifier,
        which reports the first failing step in Apple's order."""
        if not self.ios_apps:
            raise service_error(Code.APP_UNKNOWN, "no iOS app is configured")
        try:
            document = cbor2.loads(attestation)
            auth_data = document.get("authData") if isinstance(document, dict) else None
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
            auth_data = None
        if isinstance(auth_data, bytes) and len(auth_data) >= 32:
            app = self._by_rp_id_hash.get(auth_data[:32])
            if app is not None:
                return app
        return next(iter(self.ios_apps.values()))

    def ios(self, app_id: str) -> IosApp:
        app = self.ios_apps.get(app_id)
        if app is None:
            raise service_error(Code.APP_UNKNOWN, f"the iOS app {app_id} is not configured")
        return app

    def android(self, app_id: str | None) -> AndroidApp:
        if app_id is None:
            if len(self.android_apps) == 1:
                return next(iter(self.android_apps.values()))
            if not self.android_apps:
                raise service_error(Code.APP_UNKNOWN, "no Android app is configured")
            raise service_error(
                Code.REQUEST_INVALID, "appId is required: several Android apps are configured"
            )
        app = self.android_apps.get(app_id)
        if app is None:
            raise service_error(Code.APP_UNKNOWN, f"the Android app {app_id} is not configured")
        return app

    def public_key(self, point: bytes) -> ec.EllipticCurvePublicKey:
        """A device public key object, parsed once per key (point validation is not free)."""
        key = self._public_keys.get(point)
        if key is None:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            self._public_keys[point] = key
            if len(self._public_keys) > 50_000:
                self._public_keys.popitem(last=False)
        return key

    async def aclose(self) -> None:
        for ios_app in self.ios_apps.values():
            if ios_app.refresh_client is not None:
                await ios_app.refresh_client.aclose()
        for app in self.android_apps.values():
            if app.verifier.decoder is not None:
                await app.verifier.decoder.aclose()
