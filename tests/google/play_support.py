"""Constants and helpers shared by the Play Integrity tests (imported by module name)."""

from __future__ import annotations

from datetime import UTC, datetime

from appintegrity.testing.android import PlayIntegrityTestKeys

PACKAGE = "com.example.app"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REQUEST_HASH = "2cp24Y2wRMUh1fEJ-4G8R3HfH7L4I2H6tnk0M1R9lKk"
NONCE = "R2Rra24ydWVpRGl3Y2hpZUJpTWVkU2hqY2NoaDFfaVk"

# One EC key pair for the whole session keeps the tests fast.
KEYS = PlayIntegrityTestKeys.generate()
