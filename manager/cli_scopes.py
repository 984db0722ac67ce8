"""``macpool scope``: the engine → data center → cluster → namespace tree."""

from __future__ import annotations

from typing import Any

import click

from manager.cli_pools import find_pool
from manager.cli_support import CliContext, emit, fail, handle_errors, json_option, pass_ctx, table
from manager.presenters import scope_data
from manager.services import (
    assign_pool,
    create_scope,
    delete_scope,
    get_scope,
    list_scopes,
    move_scope,
)


def scope_text(data: dict[str, Any]) -> str:
    inherited = f" (inherited from {data['inherited_from']})" if data["inherited_from"] else ""
    return (
        f"Scope {data['id']}: {data['path']}  [{data['kind']}]\n"
        f"  pool: {data['effective_pool']}{inherited}"
    )


@click.group()
def scope() -> None:
    """Manage the engine → data center → cluster → namespace tree."""


@scope.command("list")
@json_option
@pass_ctx
@handle_errors
def scope_list(ctx: CliContext, as_json: bool) -> None:
    """List every scope with its effective pool."""
    with ctx.session() as session:
        data = [scope_data(session, s) for s in list_scopes(session)]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [
                    d["id"],
                    d["path"],
                    d["kind"],
                    d["effective_pool"] + ("" if d["pool_id"] else " (inherited)"),
                ]
                for d in rows
            ],
            ["ID", "PATH", "KIND", "POOL"],
        ),
    )


@scope.command("show")
@click.argument("scope_ref")
@json_option
@pass_ctx
@handle_errors
def scope_show(ctx: CliContext, scope_ref: str, as_json: bool) -> None:
    """Show one scope (by id or path)."""
    with ctx.session() as session:
        data = scope_data(session, get_scope(session, scope_ref))
    emit(data, as_json=as_json, text=scope_text)


@scope.command("create")
@click.option("--kind", required=True, type=click.Choice(["datacenter", "cluster", "namespace"]))
@click.option("--name", required=True)
@click.option("--parent", default="/", show_default=True, help="Parent scope id or path.")
@click.option("--pool", "pool_ref", help="Assign this pool (id or name).")
@json_option
@pass_ctx
@handle_errors
def scope_create(
    ctx: CliContext, kind: str, name: str, parent: str, pool_ref: str | None, as_json: bool
) -> None:
    """Create a scope."""
    with ctx.session(write=True) as session:
        pool_id = find_pool(session, pool_ref).id if pool_ref else None
        created = create_scope(
            session, ctx.actor, kind=kind, name=name, parent=parent, pool_id=pool_id
        )
        data = scope_data(session, created)
    emit(data, as_json=as_json, text=scope_text)


@scope.command("assign")
@click.argument("scope_ref")
@click.option("--pool", "pool_ref", help="Pool id or name.")
@click.option("--clear", is_flag=True, help="Remove the assignment: inherit again.")
@json_option
@pass_ctx
@handle_errors
def scope_assign(
    ctx: CliContext, scope_ref: str, pool_ref: str | None, clear: bool, as_json: bool
) -> None:
    """Assign a pool to a scope, or clear it."""
    if bool(pool_ref) == clear:
        fail("give exactly one of --pool or --clear", 2)
    with ctx.session(write=True) as session:
        pool_id = find_pool(session, pool_ref).id if pool_ref else None
        data = scope_data(session, assign_pool(session, ctx.actor, scope_ref, pool_id))
    emit(data, as_json=as_json, text=scope_text)


@scope.command("move")
@click.argument("scope_ref")
@click.option("--parent", required=True, help="New parent scope id or path.")
@json_option
@pass_ctx
@handle_errors
def scope_move(ctx: CliContext, scope_ref: str, parent: str, as_json: bool) -> None:
    """Move a scope under another parent."""
    with ctx.session(write=True) as session:
        data = scope_data(session, move_scope(session, ctx.actor, scope_ref, parent))
    emit(data, as_json=as_json, text=scope_text)


@scope.command("delete")
@click.argument("scope_ref")
@pass_ctx
@handle_errors
def scope_delete(ctx: CliContext, scope_ref: str) -> None:
    """Delete a scope (refused while it has children or allocations)."""
    with ctx.session(write=True) as session:
        path = get_scope(session, scope_ref).path
        delete_scope(session, ctx.actor, scope_ref)
    click.echo(f"Deleted scope {path}.")


__all__ = ["scope", "scope_text"]
