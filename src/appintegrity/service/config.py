"""The service's configuration: one TOML file, overridden by ``APPINTEGRITY_<SECTION>__<KEY>``.

The file's shape is part of the public contract (deployment scripts write it), so unknown keys
are refused with a message naming them instead of being silently ignored. Relative paths
(SQLite file, trust roots, DeviceCheck key, service-account file) resolve against the file's
directory, so a config works the same from any working directory.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from appintegrity.errors import ConfigError

log = logging.getLogger("appintegrity.service")

ENV_PREFIX = "APPINTEGRITY_"
Mode = Literal["enforce", "monitor"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    store: str = "sqlite:///appintegrity.db"
    cache: str | None = None
    issuer: str = "http://127.0.0.1:8080"
    admin_key: str | None = Field(None, min_length=16)
    mode: Mode = "enforce"
    max_body_bytes: int = Field(65536, ge=1024)
    challenge_ttl_seconds: int = Field(300, ge=1, le=86400)
    # Client addresses whose X-Forwarded-For is believed (the load balancer in front).
    forwarded_allow_ips: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    purge_interval_seconds: int = Field(60, ge=1)
    # Non-revoked debug tokens an app may have (App Check allows 20); apps may set their own.
    max_debug_tokens_per_app: int = Field(20, ge=1, le=10_000)


# How long a client may cache the JWKS (its Cache-Control max-age).
JWKS_CACHE_SECONDS = 60


class TokensConfig(_Section):
    ttl_seconds: int = Field(3600, ge=1, le=7 * 86400)
    audience: str | None = None  # default: the issuer
    key_refresh_seconds: float = Field(5.0, gt=0)
    # A new signing key is published this long before it signs, so that every JWKS an API
    # holds carries it before any token names it: every instance's (two refreshes), and the
    # copies APIs cache (JWKS_CACHE_SECONDS: the JWKS response's max-age, also longer than the
    # web verifier's 30 s between refetches). 0 signs at once.
    key_publish_seconds: float | None = Field(None, ge=0)
    leeway_seconds: int = Field(30, ge=0)

    @property
    def publish_delay_seconds(self) -> float:
        if self.key_publish_seconds is not None:
            return self.key_publish_seconds
        return 2 * self.key_refresh_seconds + JWKS_CACHE_SECONDS


class LimitsConfig(_Section):
    """Requests per minute; 0 switches a limit off."""

    challenges_per_minute_per_ip: int = Field(0, ge=0)
    verifications_per_minute_per_ip: int = Field(0, ge=0)
    verifications_per_minute_per_key: int = Field(0, ge=0)


class _AppBase(_Section):
    id: str = Field(min_length=1)
    ttl_seconds: int | None = Field(None, ge=1, le=7 * 86400)
    allow_debug_tokens: bool = True
    max_debug_tokens: int | None = Field(None, ge=1, le=10_000)  # default: [server]'s
    mode: Mode | None = None  # default: [server] mode


class ReceiptRefreshConfig(_Section):
    """``[apps.receipt_refresh]``: trade stored receipts for newer ones carrying Apple's
    fraud-risk metric, with the team's DeviceCheck key."""

    team_id: str = Field(min_length=1)
    devicecheck_key_id: str = Field(min_length=1)
    devicecheck_private_key_file: Path
    environment: Literal["production", "development"] | None = None  # default: the app's
    base_url: str | None = None  # Apple's data server; a fake in tests
    interval_hours: float = Field(24.0, gt=0)
    background: bool = True  # the service refreshes due receipts itself
    batch_size: int = Field(5, ge=1, le=1000)
    poll_seconds: float = Field(300.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=10)


class IosAppConfig(_AppBase):
    platform: Literal["ios"]
    environment: Literal["production", "development"] = "production"
    trust_roots: list[Path] = Field(default_factory=list)
    # Receipts and the fraud-risk metric (docs/service.md, "Receipts and fraud risk").
    receipt_trust_roots: list[Path] = Field(default_factory=list)
    require_valid_receipt: bool = False
    max_risk_metric: int | None = Field(None, ge=0)
    risk_action: Literal["limit", "block"] = "limit"
    receipt_refresh: ReceiptRefreshConfig | None = None


# Keys of an Android app table the service reads itself; the rest is the Play Integrity policy.
_ANDROID_SERVICE_KEYS = frozenset(
    {
        "id",
        "platform",
        "ttl_seconds",
        "allow_debug_tokens",
        "max_debug_tokens",
        "mode",
        "decryption_key",
        "verification_key",
        "service_account_file",
        "google_api_base_url",
        "google_token_uri",
        "client_error_action",
        "retryable_client_error_action",
        "policy",
    }
)


class AndroidAppConfig(_AppBase):
    platform: Literal["android"]
    decryption_key: str | None = None
    verification_key: str | None = None
    service_account_file: Path | None = None
    google_api_base_url: str | None = None
    google_token_uri: str | None = None
    # A reported Play Integrity client error (errorCode instead of a token): what it costs.
    # The retryable ones (network, throttling, transient) may cost less; default: the same.
    client_error_action: Literal["block", "limit"] = "block"
    retryable_client_error_action: Literal["block", "limit"] | None = None
    policy: dict[str, object] = Field(default_factory=dict)

    def client_error_decision(self, retryable: bool) -> Literal["block", "limit"]:
        if retryable and self.retryable_client_error_action is not None:
            return self.retryable_client_error_action
        return self.client_error_action

    @model_validator(mode="before")
    @classmethod
    def _collect_policy(cls, data: object) -> object:
        """Every key the service does not read itself belongs to the Play Integrity policy."""
        if not isinstance(data, Mapping):
            return data
        own = {k: v for k, v in data.items() if k in _ANDROID_SERVICE_KEYS}
        policy = dict(own.get("policy") or {})
        policy.update({k: v for k, v in data.items() if k not in _ANDROID_SERVICE_KEYS})
        own["policy"] = policy
        return own

    @model_validator(mode="after")
    def _one_decoder(self) -> AndroidAppConfig:
        local = self.decryption_key is not None or self.verification_key is not None
        if local and (self.decryption_key is None or self.verification_key is None):
            raise ValueError("decryption_key and verification_key go together")
        if not local and self.service_account_file is None and self.google_api_base_url is None:
            raise ValueError(
                "set decryption_key + verification_key (local decryption) "
                "or service_account_file (Google's decodeIntegrityToken API)"
            )
        return self


AppConfig = Annotated[IosAppConfig | AndroidAppConfig, Field(discriminator="platform")]


class ServiceConfig(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)  # type: ignore[arg-type]
    tokens: TokensConfig = Field(default_factory=TokensConfig)  # type: ignore[arg-type]
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    apps: list[AppConfig] = Field(default_factory=list)
    # Directory relative paths were resolved against (informational).
    base_dir: Path = Field(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _unique_apps(self) -> ServiceConfig:
        seen: set[str] = set()
        for app in self.apps:
            if app.id in seen:
                raise ValueError(f"app id {app.id!r} is configured twice")
            seen.add(app.id)
        return self

    @property
    def audience(self) -> str:
        return self.tokens.audience or self.server.issuer

    def app(self, app_id: str) -> IosAppConfig | AndroidAppConfig | None:
        for app in self.apps:
            if app.id == app_id:
                return app
        return None

    def app_mode(self, app_id: str) -> Mode:
        app = self.app(app_id)
        return (app.mode if app is not None else None) or self.server.mode

    def app_ttl(self, app_id: str) -> int:
        app = self.app(app_id)
        return (app.ttl_seconds if app is not None else None) or self.tokens.ttl_seconds

    @property
    def max_ttl_seconds(self) -> int:
        return max([self.tokens.ttl_seconds, *(a.ttl_seconds or 0 for a in self.apps)])


def _apply_env(raw: dict[str, object], env: Mapping[str, str]) -> None:
    """``APPINTEGRITY_SERVER__PORT=9000`` sets ``[server] port``; pydantic coerces the text."""
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section not in ("server", "tokens", "limits") or not key:
            continue
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        if key == "forwarded_allow_ips":
            table[key] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            table[key] = value


def _resolve_paths(raw: dict[str, object], base: Path) -> None:
    """Relative paths in the file mean relative to the file, not to the working directory."""
    server = raw.get("server")
    if isinstance(server, dict):
        for key in ("store", "cache"):
            url = server.get(key)
            if isinstance(url, str):
                server[key] = resolve_sqlite_url(url, base)
    apps = raw.get("apps")
    if not isinstance(apps, list):
        return
    for app in apps:
        if not isinstance(app, dict):
            continue
        for key in ("trust_roots", "receipt_trust_roots"):
            roots = app.get(key)
            if isinstance(roots, list):
                app[key] = [
                    str(base / r) if isinstance(r, str) and not Path(r).is_absolute() else r
                    for r in roots
                ]
        refresh = app.get("receipt_refresh")
        if isinstance(refresh, Mapping):
            refresh = app["receipt_refresh"] = dict(refresh)
            key_file = refresh.get("devicecheck_private_key_file")
            if isinstance(key_file, str) and not Path(key_file).is_absolute():
                refresh["devicecheck_private_key_file"] = str(base / key_file)
        account = app.get("service_account_file")
        if isinstance(account, str) and not Path(account).is_absolute():
            app["service_account_file"] = str(base / account)


def resolve_sqlite_url(url: str, base: Path) -> str:
    """``sqlite:///relative.db`` → an absolute path under ``base``; other URLs unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix) :]
    if path == ":memory:" or path.startswith("/") or not path:
        return url
    return prefix + str((base / path).resolve())


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_config(
    raw: Mapping[str, object], *, base_dir: Path, env: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Validate a parsed TOML mapping (plus environment overrides) into a ``ServiceConfig``."""
    data: dict[str, object] = {
        k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()
    }
    apps = data.get("apps")
    if isinstance(apps, list):
        data["apps"] = [dict(a) if isinstance(a, Mapping) else a for a in apps]
    _apply_env(data, os.environ if env is None else env)
    _resolve_paths(data, base_dir)
    data["base_dir"] = base_dir
    try:
        config = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_format_validation_error(exc)}") from exc
    for app in config.apps:
        if isinstance(app, IosAppConfig):
            for key, roots in (
                ("trust_roots", app.trust_roots),
                ("receipt_trust_roots", app.receipt_trust_roots),
            ):
                for root in roots:
                    if not root.is_file():
                        raise ConfigError(f"apps[{app.id}].{key}: {root} does not exist")
            refresh = app.receipt_refresh
            if refresh is not None and not refresh.devicecheck_private_key_file.is_file():
                raise ConfigError(
                    f"apps[{app.id}].receipt_refresh.devicecheck_private_key_file: "
                    f"{refresh.devicecheck_private_key_file} does not exist"
                )
        if isinstance(app, AndroidAppConfig) and app.service_account_file is not None:
            if not app.service_account_file.is_file():
                raise ConfigError(
                    f"apps[{app.id}].service_account_file: {app.service_account_file} "
                    "does not exist"
                )
    return config


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, override from the environment and validate the TOML file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    return parse_config(raw, base_dir=file.resolve().parent, env=env)
