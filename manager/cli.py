"""The ``macpool`` command: serve, migrate, and manage pools, scopes, allocations and access.

This module holds the root group, ``serve`` and ``db``; the other command groups live in
``cli_pools``, ``cli_scopes``, ``cli_allocations`` and ``cli_accounts`` and are registered
here, followed by the commands of installed plugins.
"""

from __future__ import annotations

import click

from manager import __version__
from manager.cli_accounts import token, user
from manager.cli_allocations import allocate, allocations, confirm, events, mac_command, release
from manager.cli_migrations import migration
from manager.cli_pools import pool
from manager.cli_scopes import scope
from manager.cli_support import CliContext, handle_errors, pass_ctx


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="macpool")
def main() -> None:
    """MacPool: collision-aware MAC address pools for virtualization estates.

    Configuration comes from MACPOOL_* environment variables (see the README).
    """


# --- serve and database -------------------------------------------------------------------


@main.command()
@click.option("--bind", help="HOST:PORT for UI and API (default MACPOOL_BIND, 127.0.0.1:8080).")
@pass_ctx
@handle_errors
def serve(ctx: CliContext, bind: str | None) -> None:
    """Migrate, create the default pool on first start, and serve UI + API."""
    from manager.config import parse_bind
    from manager.serve import serve as run

    if bind:
        parse_bind(bind, "--bind")
    run(ctx.settings, bind=bind)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
@handle_errors
def db_upgrade(ctx: CliContext, revision: str) -> None:
    """Apply migrations and create the default pool and admin account if missing."""
    from manager.migrate import current_revision, upgrade
    from manager.startup import prepare

    if revision == "head":
        database = prepare(ctx.settings, echo=click.echo)
    else:
        database = ctx.database
        upgrade(database, revision)
    click.echo(f"Database at revision {current_revision(database)}.")


@db.command("downgrade")
@click.argument("revision")
@pass_ctx
@handle_errors
def db_downgrade(ctx: CliContext, revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every table)."""
    from manager.migrate import current_revision, downgrade

    downgrade(ctx.database, revision)
    click.echo(f"Database at revision {current_revision(ctx.database) or 'base'}.")


# --- the command groups from their own modules, then the plugins' commands ------------------

for _command in (
    pool,
    scope,
    allocate,
    release,
    confirm,
    allocations,
    mac_command,
    events,
    migration,
    token,
    user,
):
    main.add_command(_command)


def _add_plugin_commands() -> None:
    from manager.plugins import available_plugins

    for plugin in available_plugins().values():
        commands = getattr(plugin, "cli_commands", None)
        for command in commands() if commands else []:
            existing = main.commands.get(command.name or "")
            if isinstance(existing, click.Group) and isinstance(command, click.Group):
                for sub in command.commands.values():
                    existing.add_command(sub)
            else:
                main.add_command(command)


_add_plugin_commands()

__all__ = ["main"]
