"""``macpool pool``: create, list, show, change and delete MAC pools."""

from __future__ import annotations

from typing import Any

import click

from manager.cli_support import CliContext, emit, handle_errors, json_option, pass_ctx, table
from manager.presenters import pool_data
from manager.services import (
    create_pool,
    delete_pool,
    find_pool_by_name,
    get_pool,
    list_pools,
    update_pool,
)


def pool_text(data: dict[str, Any]) -> str:
    stats = data["statistics"]
    lines = [
        f"Pool {data['id']}: {data['name']}" + ("  (default)" if data["is_default"] else ""),
        f"  description:      {data['description'] or '-'}",
        f"  allow duplicates: {'yes' if data['allow_duplicates'] else 'no'}",
        "  ranges:",
        *[f"    [{r['id']}] {r['start']} - {r['end']}  ({r['size']} MACs)" for r in data["ranges"]],
        f"  size {stats['size']}, allocated {stats['allocated']}, available {stats['available']}, "
        f"external {stats['external']}, duplicates {stats['duplicates']}",
    ]
    return "\n".join(lines)


def find_pool(session: Any, ref: str) -> Any:
    """The pool named by ``ref``: an id if it is all digits, else a name."""
    return get_pool(session, int(ref)) if ref.isdigit() else find_pool_by_name(session, ref)


@click.group()
def pool() -> None:
    """Create, list, show, change and delete MAC pools."""


@pool.command("list")
@json_option
@pass_ctx
@handle_errors
def pool_list(ctx: CliContext, as_json: bool) -> None:
    """List every pool with its utilization."""
    with ctx.session() as session:
        data = [pool_data(session, p) for p in list_pools(session)]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [
                    d["id"],
                    d["name"] + (" *" if d["is_default"] else ""),
                    len(d["ranges"]),
                    d["statistics"]["size"],
                    d["statistics"]["allocated"],
                    d["statistics"]["available"],
                    "yes" if d["allow_duplicates"] else "no",
                ]
                for d in rows
            ],
            ["ID", "NAME", "RANGES", "SIZE", "ALLOCATED", "AVAILABLE", "DUPLICATES OK"],
        ),
    )


@pool.command("show")
@click.argument("pool_ref")
@json_option
@pass_ctx
@handle_errors
def pool_show(ctx: CliContext, pool_ref: str, as_json: bool) -> None:
    """Show one pool (by id or name)."""
    with ctx.session() as session:
        data = pool_data(session, find_pool(session, pool_ref))
    emit(data, as_json=as_json, text=pool_text)


@pool.command("create")
@click.option("--name", required=True)
@click.option(
    "--range",
    "ranges",
    multiple=True,
    required=True,
    metavar="START-END",
    help="A MAC range; repeat for several.",
)
@click.option("--description", default="")
@click.option("--allow-duplicates/--no-allow-duplicates", default=False)
@json_option
@pass_ctx
@handle_errors
def pool_create(
    ctx: CliContext,
    name: str,
    ranges: tuple[str, ...],
    description: str,
    allow_duplicates: bool,
    as_json: bool,
) -> None:
    """Create a pool."""
    with ctx.session(write=True) as session:
        created = create_pool(
            session,
            ctx.actor,
            name=name,
            ranges=list(ranges),
            description=description,
            allow_duplicates=allow_duplicates,
        )
        data = pool_data(session, created)
    emit(data, as_json=as_json, text=pool_text)


@pool.command("update")
@click.argument("pool_ref")
@click.option("--name")
@click.option(
    "--range",
    "ranges",
    multiple=True,
    metavar="START-END",
    help="Replace the ranges; repeat for several.",
)
@click.option("--description")
@click.option("--allow-duplicates/--no-allow-duplicates", default=None)
@json_option
@pass_ctx
@handle_errors
def pool_update(
    ctx: CliContext,
    pool_ref: str,
    name: str | None,
    ranges: tuple[str, ...],
    description: str | None,
    allow_duplicates: bool | None,
    as_json: bool,
) -> None:
    """Change a pool (by id or name)."""
    with ctx.session(write=True) as session:
        target = find_pool(session, pool_ref)
        changed = update_pool(
            session,
            ctx.actor,
            target.id,
            name=name,
            description=description,
            allow_duplicates=allow_duplicates,
            ranges=list(ranges) or None,
        )
        data = pool_data(session, changed)
    emit(data, as_json=as_json, text=pool_text)


@pool.command("delete")
@click.argument("pool_ref")
@pass_ctx
@handle_errors
def pool_delete(ctx: CliContext, pool_ref: str) -> None:
    """Delete a pool (refused while it is default, assigned or holding MACs)."""
    with ctx.session(write=True) as session:
        target = find_pool(session, pool_ref)
        name = target.name
        delete_pool(session, ctx.actor, target.id)
    click.echo(f"Deleted pool '{name}'.")


__all__ = ["find_pool", "pool", "pool_text"]
