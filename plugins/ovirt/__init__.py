"""oVirt plugin: import pools, scopes and in-use MACs from legacy oVirt/RHV exports.

The plugin object is what the ``macpool.plugins`` entry point names. Every app and CLI loads
it (``MACPOOL_PLUGINS`` defaults to ``ovirt``), so this module imports nothing heavy: the
readers, the importer and the endpoint are imported when first used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from flask import Flask

    from manager.config import Settings


class OvirtPlugin:
    """The oVirt import plugin: ``macpool import ovirt`` and ``POST /api/v1/imports/ovirt``."""

    name = "ovirt"

    def init_app(self, app: Flask) -> None:
        """Register the import endpoint with the REST API (when the API is present)."""
        from plugins.ovirt.web import init_app

        init_app(app)

    def cli_commands(self) -> list[click.Command]:
        """The ``import`` command group with its ``ovirt`` subcommand."""
        from plugins.ovirt.cli import import_group

        return [import_group]

    def processes(self, settings: Settings) -> list[Callable[[], None]]:
        """The importer runs no background process."""
        return []


plugin = OvirtPlugin()

__all__ = ["OvirtPlugin", "plugin"]
