"""The wire contract (camelCase JSON) as pydantic models: the only place pydantic meets requests.

Field limits are generous for genuine clients (an attestation object is about 5-6 KB of
base64) and keep hostile input small; the body limit caps everything anyway.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

# Strict strings: a number where text belongs is a client bug worth a 400, not a coercion.
KeyIdText = Annotated[StrictStr, Field(min_length=1, max_length=128)]
TokenText = Annotated[StrictStr, Field(min_length=1, max_length=48_000)]
ChallengeText = Annotated[StrictStr, Field(min_length=1, max_length=256)]
PayloadText = Annotated[StrictStr, Field(min_length=1, max_length=16_384)]
AppIdText = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Request(BaseModel):
    # Unknown members are refused: a misspelt "limitedUse" must not silently become false.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(_Wire):
    code: str = Field(examples=["challenge.consumed"])
    message: str
    reasons: list[str] | None = Field(None, description="decision.blocked only: policy reasons")


class ErrorResponse(_Wire):
    error: ErrorDetail


class ChallengeRequest(_Request):
    purpose: Literal["attestation", "assertion"] | None = None
    keyId: KeyIdText | None = Field(None, description="binds the challenge to one device key")


class ChallengeResponse(_Wire):
    challenge: str = Field(description="base64url, 256 random bits, single use")
    expiresAt: str


class RegistrationRequest(_Request):
    platform: Literal["ios"]
    format: Literal["apple-app-attest"]
    keyId: KeyIdText
    challenge: ChallengeText
    token: TokenText = Field(description="the attestation object, base64")


class ReceiptOutcome(_Wire):
    valid: bool = Field(description="the attestation's receipt passed Apple's receipt validation")
    riskMetric: int | None = Field(
        None, description="Apple's fraud-risk metric (attestations on the device in 30 days)"
    )


class RegistrationResponse(_Wire):
    keyId: str
    environment: str
    appToken: str
    expiresAt: str
    receipt: ReceiptOutcome | None = Field(
        None, description="the receipt check (informational; it feeds fraud assessment)"
    )


class IosAssertionRequest(_Request):
    platform: Literal["ios"]
    format: Literal["apple-app-attest"]
    keyId: KeyIdText
    payload: PayloadText = Field(description="the exact UTF-8 text the assertion signs")
    token: TokenText = Field(description="the assertion object, base64")
    limitedUse: StrictBool = False


class AndroidAssertionRequest(_Request):
    platform: Literal["android"]
    format: Literal["google-play-integrity"]
    payload: PayloadText
    token: TokenText = Field(description="the Play Integrity token")
    appId: AppIdText | None = Field(
        None, description="package name; needed only when several Android apps are configured"
    )
    limitedUse: StrictBool = False


AssertionRequest = Annotated[
    IosAssertionRequest | AndroidAssertionRequest, Field(discriminator="platform")
]


class AssertionResponse(_Wire):
    decision: Literal["allow", "limit", "block"]
    counter: int | None = None
    appToken: str
    expiresAt: str
    reasons: list[str] = Field(default_factory=list)


class TokenVerifyRequest(_Request):
    token: TokenText
    consume: StrictBool = False


class TokenVerifyResponse(_Wire):
    valid: bool
    claims: dict[str, object]


class DebugExchangeRequest(_Request):
    appId: AppIdText
    debugToken: Annotated[StrictStr, Field(min_length=1, max_length=256)]


class DebugExchangeResponse(_Wire):
    appToken: str
    expiresAt: str
    decision: Literal["allow"] = "allow"
    debug: Literal[True] = True


class HealthResponse(_Wire):
    status: Literal["ok"]


class SigningKeyInfo(_Wire):
    kid: str
    createdAt: str
    retiredAt: str | None


class SigningKeysResponse(_Wire):
    active: str = Field(description="the key that signs now")
    next: str | None = Field(
        None, description="a key already published that starts signing after the publish delay"
    )
    keys: list[SigningKeyInfo]


class DeviceKeyInfo(_Wire):
    keyId: str
    appId: str
    platform: str
    environment: str
    counter: int
    riskMetric: int | None
    createdAt: str
    lastSeenAt: str
    revokedAt: str | None


class DeviceKeysResponse(_Wire):
    keys: list[DeviceKeyInfo]


class RevokeResponse(_Wire):
    revoked: bool


class DebugTokenCreateRequest(_Request):
    appId: AppIdText
    name: Annotated[StrictStr, Field(min_length=1, max_length=100)]


class DebugTokenInfo(_Wire):
    tokenId: str
    appId: str
    name: str
    createdAt: str
    revokedAt: str | None


class DebugTokenCreateResponse(DebugTokenInfo):
    secret: str = Field(description="shown once; the service keeps only its SHA-256")


class DebugTokensResponse(_Wire):
    tokens: list[DebugTokenInfo]
