"""The wire contract (camelCase JSON) as pydantic models: the only place pydantic meets requests.

Field limits are generous for genuine clients (an attestation object is about 5-6 KB of
base64) and keep hostile input small; the body limit caps everything anyway.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

# Strict strings: a number where text belongs is a client bug worth a 400, not a coercion.
KeyIdText = Annotated[StrictStr, Field(min_length=1, max_length=128)]
TokenText = Annotated[StrictStr, Field(min_length=1, max_length=48_000)]
ChallengeText = Annotated[StrictStr, Field(min_length=1, max_length=256)]
PayloadText = Annotated[StrictStr, Field(min_length=1, max_length=16_384)]
AppIdText = Annotated[StrictStr, Field(min_length=1, max_length=255)]
# Token binding (Approov's `pay`): standard base64 of the SHA-256 of the request value the token
# is bound to (e.g. the Authorization header). The app sends the hash, never the value itself.
BindingHash = Annotated[
    StrictStr,
    Field(
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description=(
            "binds the app token to a request value: base64 SHA-256 of it (e.g. of the"
            " Authorization header); the API checks it (RoutePolicy.binding_header)"
        ),
    ),
]
# A Java int, as the Play Integrity library reports it (negative for every real error).
ClientErrorCode = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Request(BaseModel):
    # Unknown members are refused: a misspelt "limitedUse" must not silently become false.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientErrorInfo(_Wire):
    """What the service knows about a Play Integrity client error code the app reported."""

    code: int = Field(examples=[-8])
    name: str = Field(examples=["TOO_MANY_REQUESTS"], description="UNKNOWN for unlisted codes")
    retryable: bool = Field(
        description="a new attempt (new challenge, new token request) can succeed unaided"
    )
    resolvedBy: Literal["app", "user", "developer", "nobody"]
    remediation: str = Field(description="what to do next, for the app and its developer")
    retryAfterSeconds: int | None = Field(
        None, description="wait this long before the next attempt (then 10, 20 s)"
    )


class ErrorDetail(_Wire):
    code: str = Field(examples=["challenge.consumed"])
    message: str
    reasons: list[str] | None = Field(None, description="decision.blocked only: policy reasons")
    clientError: ClientErrorInfo | None = Field(
        None, description="google.client_error only: the reported code and what to do"
    )


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
    binding: BindingHash | None = None


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
    binding: BindingHash | None = None


class AndroidAssertionRequest(_Request):
    platform: Literal["android"]
    format: Literal["google-play-integrity"]
    payload: PayloadText
    token: TokenText | None = Field(
        None, description="the Play Integrity token (exactly one of token and errorCode)"
    )
    errorCode: ClientErrorCode | None = Field(
        None,
        description=(
            "instead of a token: the Play Integrity error code the app got "
            "(StandardIntegrityErrorCode, or IntegrityErrorCode with requestType classic)"
        ),
        examples=[-8],
    )
    requestType: Literal["standard", "classic"] | None = Field(
        None, description="with errorCode only: which table the code is from (default standard)"
    )
    appId: AppIdText | None = Field(
        None, description="package name; needed only when several Android apps are configured"
    )
    limitedUse: StrictBool = False
    binding: BindingHash | None = None

    @model_validator(mode="after")
    def _token_or_error_code(self) -> AndroidAssertionRequest:
        if (self.token is None) == (self.errorCode is None):
            raise ValueError("send exactly one of token and errorCode")
        if self.errorCode == 0:
            raise ValueError("errorCode 0 is NO_ERROR: send the token instead")
        if self.requestType is not None and self.errorCode is None:
            raise ValueError("requestType goes with errorCode only")
        return self


AssertionRequest = Annotated[
    IosAssertionRequest | AndroidAssertionRequest, Field(discriminator="platform")
]


class AssertionResponse(_Wire):
    decision: Literal["allow", "limit", "block"]
    counter: int | None = None
    appToken: str
    expiresAt: str
    reasons: list[str] = Field(default_factory=list)
    clientError: ClientErrorInfo | None = Field(
        None, description="Android errorCode reports only: the code and what to do"
    )


class TokenVerifyRequest(_Request):
    token: TokenText
    consume: StrictBool = False


class TokenVerifyResponse(_Wire):
    valid: bool
    claims: dict[str, object]


class DebugExchangeRequest(_Request):
    appId: AppIdText
    debugToken: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    binding: BindingHash | None = None


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
    truncated: bool  # more keys match than ``limit``: ask with a larger limit or per app


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
