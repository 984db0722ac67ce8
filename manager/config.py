"""Configuration: defaults, then an optional TOML file (``MACPOOL_CONFIG``), then ``MACPOOL_*``
environment variables, then explicit overrides. Every value is validated once, at start, with
one clear message per bad value. No Flask here.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from manager.core.errors import InvalidInput, InvalidRange
from manager.core.ranges import MacRange


class ConfigError(InvalidInput):
    """A configuration value is not acceptable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".macpool")
    database_url: str = ""
    bind: str = "127.0.0.1:8080"
    secret_key: str = ""
    default_range: str = ""
    plugins: tuple[str, ...] = ("ovirt",)
    workers: int = 2
    threads: int = 8
    low_threshold: int = 10
    max_content_length: int = 1024 * 1024
    #: Mark the UI session cookie ``Secure`` (MacPool reached over HTTPS, e.g. behind a proxy).
    secure_cookies: bool = False
    expire_interval: float = 30.0
    log_level: str = "INFO"
    webhook_bind: str = "0.0.0.0:8443"
    webhook_cert: str = ""
    webhook_key: str = ""
    webhook_service: str = "macpool-webhook"
    k8s_cluster_scope: str = "/kubernetes"
    k8s_reconcile: str = "auto"
    k8s_wait_time: int = 300
    #: Seconds between checks of MacPool's own webhook certificates (rotated a day before expiry).
    k8s_cert_check_interval: float = 3600.0
    k8s_namespace: str = "macpool"
    k8s_vm_mode: str = "opt-out"
    k8s_pod_mode: str = "opt-in"
    #: Label keys of a migrated VM: the source VM's id, the plan, the migration (Forklift's).
    k8s_migration_labels: str = "vmID,plan,migration"
    #: Answer VM CREATE reviews from MACs each webhook process reserved ahead (recorded within
    #: ~0.1 s); false: every review writes its allocation before answering.
    k8s_reserve_ahead: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'macpool.db').resolve()}"

    @property
    def bind_host_port(self) -> tuple[str, int]:
        return parse_bind(self.bind, "MACPOOL_BIND")


def parse_bind(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}='{value}' is not HOST:PORT (e.g. 127.0.0.1:8080).")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ":PORT" means all


def _coerce(name: str, current: Any, raw: Any, *, label: str | None = None) -> Any:
    """Convert ``raw`` to the type of the default; ``label`` names where the value came from."""
    env = label or f"MACPOOL_{name.upper()}"
    if isinstance(raw, bool) and not isinstance(current, bool):
        raise ConfigError(f"{env}={str(raw).lower()} is not a {type(current).__name__} value.")
    if isinstance(current, Path):
        return Path(str(raw))
    if isinstance(current, tuple):
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(i).strip().lower() for i in items if str(i).strip())
    if isinstance(current, bool):
        return str(raw).lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{env}='{raw}' is not a whole number.") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{env}='{raw}' is not a number.") from None
    return str(raw)


def validate(settings: Settings) -> Settings:
    """Check every value; raise :class:`ConfigError` naming the variable and the problem."""
    parse_bind(settings.bind, "MACPOOL_BIND")
    parse_bind(settings.webhook_bind, "MACPOOL_WEBHOOK_BIND")
    if settings.default_range:
        try:
            MacRange.parse_text(settings.default_range)
        except InvalidRange as exc:
            raise ConfigError(f"MACPOOL_DEFAULT_RANGE: {exc.message}") from None
    positive = ("workers", "threads", "max_content_length", "k8s_wait_time")
    for name in positive:
        if getattr(settings, name) < 1:
            raise ConfigError(f"MACPOOL_{name.upper()} must be at least 1.")
    if settings.k8s_cert_check_interval <= 0:
        raise ConfigError("MACPOOL_K8S_CERT_CHECK_INTERVAL must be a positive number of seconds.")
    if settings.low_threshold < 0:
        raise ConfigError("MACPOOL_LOW_THRESHOLD must not be negative.")
    if settings.database_url and not settings.database_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("MACPOOL_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL.")
    if settings.database_url.startswith("postgresql://"):
        settings = replace(
            settings, database_url="postgresql+psycopg://" + settings.database_url[13:]
        )
    if not settings.k8s_cluster_scope.startswith("/"):
        raise ConfigError("MACPOOL_K8S_CLUSTER_SCOPE must be a scope path such as /kubernetes.")
    keys = [key.strip() for key in settings.k8s_migration_labels.split(",")]
    if len(keys) != 3 or not all(keys):
        raise ConfigError(
            "MACPOOL_K8S_MIGRATION_LABELS must be three label keys VMID,PLAN,MIGRATION, "
            "e.g. vmID,plan,migration."
        )
    if settings.k8s_reconcile not in ("auto", "true", "false"):
        raise ConfigError("MACPOOL_K8S_RECONCILE must be true, false or auto.")
    for name in ("k8s_vm_mode", "k8s_pod_mode"):
        mode = getattr(settings, name).strip().lower()
        if mode not in ("opt-in", "opt-out"):
            raise ConfigError(
                f"MACPOOL_{name.upper()}='{getattr(settings, name)}' is not an opt mode: "
                "use opt-in or opt-out."
            )
        settings = replace(settings, **{name: mode})
    return settings


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, ``MACPOOL_CONFIG``, ``MACPOOL_*`` and ``overrides``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name: f for f in fields(Settings) if f.name != "extra"}
    defaults = Settings()
    config_file = env.get("MACPOOL_CONFIG")
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"MACPOOL_CONFIG='{config_file}' cannot be read: {exc}") from None
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"{config_file}: unknown setting '{key}'.")
            values[key] = _coerce(key, getattr(defaults, key), raw, label=f"{config_file}: {key}")
    for name in known:
        raw = env.get(f"MACPOOL_{name.upper()}")
        # An empty variable means "unset", except for lists, where it means "none".
        if raw is not None and (raw != "" or isinstance(getattr(defaults, name), tuple)):
            values[name] = _coerce(name, getattr(defaults, name), raw)
    for key, raw in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"Unknown setting '{key}'.")
        values[key] = _coerce(key, getattr(defaults, key), raw)
    return validate(replace(defaults, **values))


def ensure_secret_key(settings: Settings) -> Settings:
    """Use MACPOOL_SECRET_KEY, or a key generated once into the data directory (mode 0600)."""
    if settings.secret_key:
        return settings
    path = settings.data_dir / "secret-key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return replace(settings, secret_key=path.read_text().strip())


__all__ = [
    "ConfigError",
    "Settings",
    "ensure_secret_key",
    "load_settings",
    "parse_bind",
    "validate",
]
