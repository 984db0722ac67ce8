"""oVirt plugin: import pools, scopes and in-use MACs from legacy oVirt/RHV exports.

The plugin object is what the ``macpool.plugins`` entry point names. Every app and CLI loads
it (``MACPOOL_PLUGINS`` defaults to ``ovirt``), so this module imports nothing heavy: the
readers, the importer and the endpoint are imported when first used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from plugins.ovirt.settings import OvirtSettings

if TYPE_CHECKING:
    from pathlib import Path

    import click
    from flask import Flask

    from manager.config import Settings
    from manager.services import SourceVm


class OvirtPlugin:
    """The oVirt import plugin: ``macpool import ovirt``, ``POST /api/v1/imports/ovirt`` and
    the admin UI's Import page."""

    name = OvirtSettings.plugin
    settings_type = OvirtSettings

    def init_app(self, app: Flask) -> None:
        """Register the import endpoint with the REST API (when the API is present) and the
        import page with the admin UI (when the UI is installed and in this app)."""
        from importlib.util import find_spec

        from plugins.ovirt.web import init_app

        init_app(app)
        if find_spec("ui") is not None:
            from plugins.ovirt.ui import init_app as init_ui

            init_ui(app)

    def cli_commands(self) -> list[click.Command]:
        """The ``import`` command group with its ``ovirt`` subcommand."""
        from plugins.ovirt.cli import import_group

        return [import_group]

    def migration_sources(
        self, path: Path, *, filename: str | None = None
    ) -> list[SourceVm] | None:
        """The VMs of an oVirt export (any format the importer reads), as migration sources:
        id, name and the NICs that carry a MAC. ``None`` when ``path`` is no oVirt export."""
        from plugins.ovirt.sources import migration_sources

        return migration_sources(path, filename=filename)

    def processes(self, settings: Settings) -> list[Callable[[], None]]:
        """The importer runs no background process."""
        return []


plugin = OvirtPlugin()

__all__ = ["OvirtPlugin", "plugin"]
