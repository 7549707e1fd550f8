"""Storage for the service: one interface, atomic by contract, several backends.

``open_store(url, cache_url=None)`` picks the backend from the URL (see ``factory``).
"""

from appintegrity.store.base import (
    ChallengeOutcome,
    ChallengeRecord,
    ConsumedChallenge,
    DebugTokenRecord,
    DeviceKey,
    RateLimitResult,
    SigningKeyRecord,
    Store,
)
from appintegrity.store.factory import open_store

__all__ = [
    "ChallengeOutcome",
    "ChallengeRecord",
    "ConsumedChallenge",
    "DebugTokenRecord",
    "DeviceKey",
    "RateLimitResult",
    "SigningKeyRecord",
    "Store",
    "open_store",
]
