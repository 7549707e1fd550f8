"""Configuration: the issue's TOML shape, env overrides, relative paths, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from appintegrity.errors import ConfigError
from appintegrity.service.config import (
    AndroidAppConfig,
    IosAppConfig,
    load_config,
    parse_config,
)
from appintegrity.service.sample import SAMPLE_CONFIG

REPO = Path(__file__).resolve().parents[2]

ISSUE_CONFIG = """
[server]
host = "127.0.0.1"
port = 8080
store = "sqlite:///appintegrity.db"
issuer = "https://integrity.example.com"
admin_key = "0123456789abcdef0123"

[tokens]
ttl_seconds = 3600

[[apps]]
id = "ABCDE12345.com.example.app"
platform = "ios"
environment = "production"
trust_roots = ["test-root.pem"]

[[apps]]
id = "com.example.app"
platform = "android"
decryption_key = "dCXwS0yhDPGxOKCrKTIgskAo+D+vQP2J38+ZNUTjLLI="
verification_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
certificate_digests = ["IybpCTPUkM4wTiRPCqkCx2Ock6Ml3_pdpkdSYDb4L2w"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "test-root.pem").write_text("placeholder")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_issue_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ISSUE_CONFIG), env={})
    assert config.server.issuer == "https://integrity.example.com"
    assert config.server.store == f"sqlite:///{tmp_path.resolve() / 'appintegrity.db'}"
    assert config.audience == "https://integrity.example.com"
    ios, android = config.apps
    assert isinstance(ios, IosAppConfig) and ios.trust_roots == [tmp_path / "test-root.pem"]
    assert isinstance(android, AndroidAppConfig)
    assert android.policy == {
        "certificate_digests": ["IybpCTPUkM4wTiRPCqkCx2Ock6Ml3_pdpkdSYDb4L2w"]
    }
    assert config.app_ttl("com.example.app") == 3600
    assert config.app_mode("com.example.app") == "enforce"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "APPINTEGRITY_SERVER__PORT": "9123",
        "APPINTEGRITY_SERVER__STORE": "postgresql://db/app",
        "APPINTEGRITY_SERVER__CACHE": "redis://cache:6379/0",
        "APPINTEGRITY_SERVER__ADMIN_KEY": "from-the-environment-1234",
        "APPINTEGRITY_SERVER__MODE": "monitor",
        "APPINTEGRITY_TOKENS__TTL_SECONDS": "600",
        "APPINTEGRITY_LIMITS__CHALLENGES_PER_MINUTE_PER_IP": "7",
        "APPINTEGRITY_SERVER__FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
        "UNRELATED": "x",
    }
    config = load_config(write(tmp_path, ISSUE_CONFIG), env=env)
    assert config.server.port == 9123
    assert config.server.store == "postgresql://db/app"
    assert config.server.cache == "redis://cache:6379/0"
    assert config.server.admin_key == "from-the-environment-1234"
    assert config.server.mode == "monitor"
    assert config.tokens.ttl_seconds == 600
    assert config.limits.challenges_per_minute_per_ip == 7
    assert config.server.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server]\nprot = 8080\n", "server.prot"),
        ("[server]\nmode = 'lenient'\n", "server.mode"),
        ("[[apps]]\nid = 'x'\nplatform = 'windows'\n", "apps.0"),
        ("[[apps]]\nid = 'x'\nplatform = 'android'\n", "service_account_file"),
        (
            "[[apps]]\nid = 'a.b'\nplatform = 'ios'\n[[apps]]\nid = 'a.b'\nplatform = 'ios'\n",
            "configured twice",
        ),
        ("[[apps]]\nid = 'a.b'\nplatform = 'ios'\ntrust_roots = ['missing.pem']\n", "missing.pem"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_invalid_configuration_is_refused_with_a_clear_message(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert fragment in info.value.message


def test_an_env_value_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(write(tmp_path, ISSUE_CONFIG), env={"APPINTEGRITY_SERVER__PORT": "high"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", env={})


def test_committed_sample_is_the_built_in_sample() -> None:
    assert (REPO / "config" / "sample.toml").read_text() == SAMPLE_CONFIG


def test_sample_config_loads(tmp_path: Path) -> None:
    config = parse_config(__import__("tomllib").loads(SAMPLE_CONFIG), base_dir=tmp_path, env={})
    assert config.server.admin_key is None
    assert [app.id for app in config.apps] == ["ABCDE12345.com.example.app", "com.example.app"]
