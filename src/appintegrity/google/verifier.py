"""One app's Play Integrity verification: read the token (locally or via Google), then the policy.

Which path reads a token is the app's configuration: with local keys (classic requests, or any
request once the app uses self-managed response keys) tokens are decrypted here; with a decoder,
Google decodes them (the only way for standard requests with Google-managed keys). With both,
local keys are used.
"""

from __future__ import annotations

from datetime import datetime

from appintegrity.google.decoder import GoogleApiDecoder
from appintegrity.google.policy import PlayIntegrityPolicy, PolicyResult, evaluate_verdict
from appintegrity.google.token import PlayIntegrityKeys, decode_token_locally
from appintegrity.google.verdict import IntegrityVerdict

__all__ = ["PlayIntegrityVerifier"]


class PlayIntegrityVerifier:
    """Verify tokens for one app. Token failures raise ``GoogleVerificationError``; verdict
    failures are the returned ``PolicyResult``'s reasons."""

    def __init__(
        self,
        policy: PlayIntegrityPolicy,
        *,
        keys: PlayIntegrityKeys | None = None,
        decoder: GoogleApiDecoder | None = None,
    ) -> None:
        if keys is None and decoder is None:
            raise ValueError("give local keys, a GoogleApiDecoder, or both")
        self.policy = policy
        self.keys = keys
        self.decoder = decoder

    async def verify(
        self,
        token: str,
        *,
        now: datetime,
        request_hash: str | None = None,
        nonce: str | None = None,
    ) -> PolicyResult:
        if self.keys is not None:
            payload = decode_token_locally(token, self.keys)
        else:
            assert self.decoder is not None
            payload = await self.decoder.decode(self.policy.package_name, token)
        return evaluate_verdict(
            IntegrityVerdict.from_payload(payload),
            self.policy,
            now=now,
            request_hash=request_hash,
            nonce=nonce,
        )

    def verify_local(
        self,
        token: str,
        *,
        now: datetime,
        request_hash: str | None = None,
        nonce: str | None = None,
    ) -> PolicyResult:
        """Synchronous: local keys only (raises ``ValueError`` when this app has none)."""
        if self.keys is None:
            raise ValueError(f"no local Play Integrity keys for {self.policy.package_name}")
        return evaluate_verdict(
            IntegrityVerdict.from_payload(decode_token_locally(token, self.keys)),
            self.policy,
            now=now,
            request_hash=request_hash,
            nonce=nonce,
        )
