"""One app's Play Integrity verification: read the token (locally or via Google), then the policy.

Which path reads a token follows the app's configuration and the token's kind. Standard requests
(bound by ``requestHash``) are encrypted with keys Google manages, so only Google can decode them:
they go to the decoder when there is one. Classic requests (bound by ``nonce``) are decrypted here
when the app has its self-managed Play Console keys, else they go to the decoder too. With only one
path configured, every token takes it (the test kit seals either kind under local keys).
"""

from __future__ import annotations

from datetime import datetime

from appintegrity.errors import GoogleVerificationError, Reason
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

    async def read_token(self, token: str, *, standard: bool | None = None) -> dict[str, object]:
        """The token's payload, read by the path its kind takes (see the module docstring).

        ``standard``: ``True`` for a standard request (the decoder if there is one), ``False``
        for a classic one (the local keys if there are any), ``None`` when the caller cannot
        tell (the service): local keys first, and a token they cannot decrypt
        (``google.decryption_failed``: a standard token under Google's keys) goes to the decoder.
        """
        keys, decoder = self.keys, self.decoder
        if keys is None or (standard and decoder is not None):
            assert decoder is not None
            return await decoder.decode(self.policy.package_name, token)
        if decoder is None or standard is False:
            return decode_token_locally(token, keys)
        try:
            return decode_token_locally(token, keys)
        except GoogleVerificationError as exc:
            if exc.reason != Reason.GOOGLE_DECRYPTION_FAILED:
                raise
        return await decoder.decode(self.policy.package_name, token)

    async def verify(
        self,
        token: str,
        *,
        now: datetime,
        request_hash: str | None = None,
        nonce: str | None = None,
    ) -> PolicyResult:
        """Read ``token`` (standard if ``request_hash`` is given, classic if ``nonce``) and apply
        the policy, bound to exactly one of ``request_hash`` / ``nonce``."""
        if (request_hash is None) == (nonce is None):
            raise ValueError("pass exactly one of request_hash (standard) or nonce (classic)")
        payload = await self.read_token(token, standard=request_hash is not None)
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
