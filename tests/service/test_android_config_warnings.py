"""An Android app configured without signing-certificate digests is called out at start."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from appintegrity.service import create_app

from .conftest import ANDROID_APP, Kit


def _android_only(kit: Kit, **extra: Any) -> dict[str, Any]:
    raw = kit.raw_config()
    raw["apps"] = [
        {
            "id": ANDROID_APP,
            "platform": "android",
            "decryption_key": kit.play_keys.decryption_key_b64,
            "verification_key": kit.play_keys.verification_key_b64,
            **extra,
        }
    ]
    return raw


def test_no_certificate_digests_logs_a_warning(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="appintegrity.service"):
        create_app(kit.config(_android_only(kit)))
    assert any("no certificate_digests" in r.getMessage() for r in caplog.records)


def test_listed_digests_log_nothing(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="appintegrity.service"):
        create_app(kit.config(_android_only(kit, certificate_digests=["A" * 43])))
    assert not any("certificate_digests" in r.getMessage() for r in caplog.records)
