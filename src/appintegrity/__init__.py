"""appintegrity: verify Apple App Attest and Google Play Integrity, issue and check app tokens."""

from appintegrity.errors import (
    AppIntegrityError,
    AppleVerificationError,
    GoogleVerificationError,
    Reason,
    ServiceError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "AppIntegrityError",
    "AppleVerificationError",
    "GoogleVerificationError",
    "Reason",
    "ServiceError",
    "VerificationError",
    "__version__",
]
