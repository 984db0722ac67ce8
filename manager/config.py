"""Configuration: defaults, then an optional TOML file (``MACPOOL_CONFIG``), then ``MACPOOL_*``
environment variables, then explicit overrides. Every value is validated once, at start, with
one clear message per bad value. No Flask here.

:class:`Settings` holds the core's settings. A plugin owns its settings: a
:class:`PluginSettings` dataclass in the plugin, named by its plugin object's
``settings_type``. Its fields are read from the same three sources under the same rules
(``MACPOOL_<FIELD>``), validated at start with the core's, and kept in
``Settings.plugin_settings`` under the plugin's name.
"""

from __future__ import annotations

import functools
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Self

from manager.core.errors import InvalidInput, InvalidRange
from manager.core.ranges import MacRange

#: The entry point group plugins are installed under (see :mod:`manager.plugins`).
PLUGIN_GROUP = "macpool.plugins"


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
    #: Each plugin's own settings (a :class:`PluginSettings`) by plugin name; a plugin missing
    #: here uses its defaults (see :meth:`PluginSettings.of`).
    plugin_settings: Mapping[str, PluginSettings] = field(default_factory=dict)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'macpool.db').resolve()}"

    @property
    def bind_host_port(self) -> tuple[str, int]:
        return parse_bind(self.bind, "MACPOOL_BIND")


@dataclass(frozen=True)
class PluginSettings:
    """Base of a plugin's settings: a frozen dataclass whose fields are its setting names.

    A field ``name`` is set by ``MACPOOL_NAME``, by ``name`` in the configuration file and by an
    override ``name``, exactly like a core setting; names must not clash with the core's.
    """

    #: The plugin's name: its key in ``Settings.plugin_settings``.
    plugin: ClassVar[str] = ""

    def validated(self) -> Self:
        """These settings checked (and normalized); :class:`ConfigError` names a bad value."""
        return self

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """This plugin's settings within ``settings`` (its defaults when none were given)."""
        found = settings.plugin_settings.get(cls.plugin)
        return found if isinstance(found, cls) else cls()

    @classmethod
    def within(cls, settings: Settings, **values: Any) -> Settings:
        """``settings`` with some of this plugin's settings changed (and validated)."""
        changed = replace(cls.of(settings), **values).validated()
        return replace(settings, plugin_settings={**settings.plugin_settings, cls.plugin: changed})


@functools.cache
def plugin_settings_types() -> tuple[type[PluginSettings], ...]:
    """The settings types of the installed plugins (their objects' ``settings_type``)."""
    found = []
    for entry in entry_points(group=PLUGIN_GROUP):
        settings_type = getattr(entry.load(), "settings_type", None)
        if isinstance(settings_type, type) and issubclass(settings_type, PluginSettings):
            found.append(settings_type)
    return tuple(found)


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
    if settings.default_range:
        try:
            MacRange.parse_text(settings.default_range)
        except InvalidRange as exc:
            raise ConfigError(f"MACPOOL_DEFAULT_RANGE: {exc.message}") from None
    for name in ("workers", "threads", "max_content_length"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"MACPOOL_{name.upper()} must be at least 1.")
    if settings.low_threshold < 0:
        raise ConfigError("MACPOOL_LOW_THRESHOLD must not be negative.")
    if settings.database_url and not settings.database_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("MACPOOL_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL.")
    if settings.database_url.startswith("postgresql://"):
        settings = replace(
            settings, database_url="postgresql+psycopg://" + settings.database_url[13:]
        )
    return settings


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, ``MACPOOL_CONFIG``, ``MACPOOL_*`` and ``overrides``;
    the installed plugins' settings come from the same sources."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    #: Every setting name → the defaults it belongs to (the core's or a plugin's).
    owners: dict[str, Any] = {
        f.name: defaults for f in fields(Settings) if f.name != "plugin_settings"
    }
    plugin_defaults = {kind: kind() for kind in plugin_settings_types()}
    for kind, plugin_default in plugin_defaults.items():
        for name in (f.name for f in fields(kind)):
            if name in owners:
                raise ConfigError(f"Plugin '{kind.plugin}' declares setting '{name}' again.")
            owners[name] = plugin_default
    values: dict[str, Any] = {}

    def take(name: str, raw: Any, *, label: str | None = None) -> None:
        values[name] = _coerce(name, getattr(owners[name], name), raw, label=label)

    config_file = env.get("MACPOOL_CONFIG")
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"MACPOOL_CONFIG='{config_file}' cannot be read: {exc}") from None
        for key, raw in data.items():
            if key not in owners:
                raise ConfigError(f"{config_file}: unknown setting '{key}'.")
            take(key, raw, label=f"{config_file}: {key}")
    for name, owner in owners.items():
        raw = env.get(f"MACPOOL_{name.upper()}")
        # An empty variable means "unset", except for lists, where it means "none".
        if raw is not None and (raw != "" or isinstance(getattr(owner, name), tuple)):
            take(name, raw)
    for key, raw in (overrides or {}).items():
        if key not in owners:
            raise ConfigError(f"Unknown setting '{key}'.")
        take(key, raw)
    plugin_settings: dict[str, PluginSettings] = {}
    for kind, plugin_default in plugin_defaults.items():
        given = {f.name: values.pop(f.name) for f in fields(kind) if f.name in values}
        if given:
            plugin_settings[kind.plugin] = replace(plugin_default, **given).validated()
    return validate(replace(defaults, **values, plugin_settings=plugin_settings))


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
    "PLUGIN_GROUP",
    "ConfigError",
    "PluginSettings",
    "Settings",
    "ensure_secret_key",
    "load_settings",
    "parse_bind",
    "plugin_settings_types",
    "validate",
]
