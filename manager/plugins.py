"""The small interface through which plugins join MacPool.

Plugins are found through the ``macpool.plugins`` entry point group, so ``manager`` never
imports ``plugins`` (import-linter enforces it). A plugin object provides any of:

- ``name``: its name in ``MACPOOL_PLUGINS``;
- ``init_app(app)``: register blueprints, metrics and readiness checks when enabled;
- ``cli_commands()``: click commands added to ``macpool`` (always, enabled or not);
- ``processes(settings)``: callables ``macpool serve`` runs in child processes when enabled
  (a second listener, a reconciler, ...);
- ``migration_sources(path, filename=None)``: the source VMs of an export file this plugin
  reads (for ``macpool migration check`` and the UI's check), ``None`` when it is not one.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import click
from flask import Flask

from manager.config import PLUGIN_GROUP, ConfigError, Settings
from manager.services.migration_check import SourceVm

GROUP = PLUGIN_GROUP


@runtime_checkable
class Plugin(Protocol):
    name: str

    def init_app(self, app: Flask) -> None: ...

    def cli_commands(self) -> list[click.Command]: ...

    def processes(self, settings: Settings) -> list[Callable[[], None]]: ...


def available_plugins() -> dict[str, Any]:
    """Every installed plugin, by name (loading errors propagate: a broken install is loud)."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}


def enabled_plugins(settings: Settings) -> list[Any]:
    """The plugins named in MACPOOL_PLUGINS, in that order; unknown names are an error."""
    found = available_plugins()
    unknown = [name for name in settings.plugins if name not in found]
    if unknown:
        raise ConfigError(
            f"MACPOOL_PLUGINS names unknown plugin(s): {', '.join(unknown)}; installed: "
            f"{', '.join(sorted(found)) or 'none'}."
        )
    return [found[name] for name in settings.plugins]


def migration_sources(path: Path, *, filename: str | None = None) -> list[SourceVm] | None:
    """The source VMs of an export, read by the first installed plugin that knows its format;
    ``None`` when no plugin does. A plugin's refusal of a malformed export propagates."""
    for plugin in available_plugins().values():
        read = getattr(plugin, "migration_sources", None)
        if read is None:
            continue
        found: list[SourceVm] | None = read(path, filename=filename)
        if found is not None:
            return found
    return None


__all__ = ["GROUP", "Plugin", "available_plugins", "enabled_plugins", "migration_sources"]
