"""The keys config/sample.toml shows commented out are real: uncommented, the file still loads."""

from __future__ import annotations

import re
from pathlib import Path

from appintegrity.service import load_config

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "sample.toml"
# Keys that need no file beside the config (trust roots and DeviceCheck keys do).
OPTIONAL_KEYS = (
    "admin_key",
    "key_publish_seconds",
    "max_debug_tokens_per_app",
    "require_valid_receipt",
    "max_risk_metric",
    "risk_action",
    "min_version_code",
    "required_device_level",
    "require_license",
    "client_error_action",
    "retryable_client_error_action",
)


def test_every_commented_optional_key_of_the_sample_loads(tmp_path: Path) -> None:
    text = SAMPLE.read_text()
    pattern = re.compile(rf"^# ({'|'.join(OPTIONAL_KEYS)}) = ", re.MULTILINE)
    found = set(pattern.findall(text))
    assert found == set(OPTIONAL_KEYS)
    enabled = pattern.sub(r"\1 = ", text).replace(
        'admin_key = "…"', 'admin_key = "' + "k" * 32 + '"'
    )
    path = tmp_path / "sample.toml"
    path.write_text(enabled)
    config = load_config(path, env={})
    # The commented value is the default: twice the 5 s refresh plus the JWKS max-age (60 s).
    assert config.tokens.publish_delay_seconds == 70
    assert load_config(SAMPLE, env={}).tokens.publish_delay_seconds == 70
    assert config.server.admin_key == "k" * 32
