"""The ``macpool`` command: serve, migrate, and manage pools, scopes, allocations and access."""

from __future__ import annotations

import sys
from typing import Any

import click

from manager import __version__
from manager.cli_support import CliContext, emit, fail, handle_errors, json_option, pass_ctx, table
from manager.core.actor import Owner
from manager.presenters import allocation_data, pool_data, scope_data
from manager.services import (
    allocate_mac,
    assign_pool,
    confirm_allocation,
    create_pool,
    create_scope,
    delete_pool,
    delete_scope,
    find_allocations,
    find_pool_by_name,
    get_pool,
    get_scope,
    list_events,
    list_pools,
    list_scopes,
    mac_info,
    move_scope,
    release_allocation,
    update_pool,
)
from manager.services import auth as auth_services


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
    from manager.serve import prepare

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


# --- pools --------------------------------------------------------------------------------


def _pool_text(data: dict[str, Any]) -> str:
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


def _find_pool(session: Any, ref: str) -> Any:
    return get_pool(session, int(ref)) if ref.isdigit() else find_pool_by_name(session, ref)


@main.group()
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
        data = pool_data(session, _find_pool(session, pool_ref))
    emit(data, as_json=as_json, text=_pool_text)


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
    emit(data, as_json=as_json, text=_pool_text)


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
        target = _find_pool(session, pool_ref)
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
    emit(data, as_json=as_json, text=_pool_text)


@pool.command("delete")
@click.argument("pool_ref")
@pass_ctx
@handle_errors
def pool_delete(ctx: CliContext, pool_ref: str) -> None:
    """Delete a pool (refused while it is default, assigned or holding MACs)."""
    with ctx.session(write=True) as session:
        target = _find_pool(session, pool_ref)
        name = target.name
        delete_pool(session, ctx.actor, target.id)
    click.echo(f"Deleted pool '{name}'.")


# --- scopes -------------------------------------------------------------------------------


def _scope_text(data: dict[str, Any]) -> str:
    inherited = f" (inherited from {data['inherited_from']})" if data["inherited_from"] else ""
    return (
        f"Scope {data['id']}: {data['path']}  [{data['kind']}]\n"
        f"  pool: {data['effective_pool']}{inherited}"
    )


@main.group()
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
    emit(data, as_json=as_json, text=_scope_text)


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
        pool_id = _find_pool(session, pool_ref).id if pool_ref else None
        created = create_scope(
            session, ctx.actor, kind=kind, name=name, parent=parent, pool_id=pool_id
        )
        data = scope_data(session, created)
    emit(data, as_json=as_json, text=_scope_text)


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
        pool_id = _find_pool(session, pool_ref).id if pool_ref else None
        data = scope_data(session, assign_pool(session, ctx.actor, scope_ref, pool_id))
    emit(data, as_json=as_json, text=_scope_text)


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
    emit(data, as_json=as_json, text=_scope_text)


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


# --- allocations --------------------------------------------------------------------------


def _alloc_text(data: dict[str, Any]) -> str:
    expires = f", expires {data['expires_at']}" if data["expires_at"] else ""
    outside = "" if data["in_range"] else " (outside the pool's ranges)"
    return (
        f"{data['mac']}  {data['state']}{expires}{outside}\n"
        f"  {data['owner']['kind']} '{data['owner']['name']}' interface '{data['interface']}'"
        f" in {data['scope']} (pool '{data['pool']}'), allocation {data['id']}"
    )


@main.command()
@click.option("--scope", "scope_ref", required=True, help="Scope id or path.")
@click.option("--owner-kind", default="device", show_default=True)
@click.option("--owner-name", required=True)
@click.option("--owner-uid")
@click.option("--interface", required=True)
@click.option("--mac", help="Request this MAC instead of the next free one.")
@click.option("--ttl", "ttl_seconds", type=int, help="Keep it pending for this many seconds.")
@click.option("--reserve", is_flag=True, help="Hold it as reserved (e.g. a router's MAC).")
@json_option
@pass_ctx
@handle_errors
def allocate(
    ctx: CliContext,
    scope_ref: str,
    owner_kind: str,
    owner_name: str,
    owner_uid: str | None,
    interface: str,
    mac: str | None,
    ttl_seconds: int | None,
    reserve: bool,
    as_json: bool,
) -> None:
    """Allocate a MAC to an owner's interface (idempotent)."""
    with ctx.session(write=True) as session:
        result = allocate_mac(
            session,
            ctx.actor,
            scope=scope_ref,
            owner=Owner(owner_kind, owner_name, owner_uid),
            interface=interface,
            mac=mac,
            ttl_seconds=ttl_seconds,
            state="reserved" if reserve else "allocated",
        )
        data = allocation_data(result.allocation) | {"created": result.created}
    emit(data, as_json=as_json, text=_alloc_text)


@main.command()
@click.argument("allocation_id", type=int)
@json_option
@pass_ctx
@handle_errors
def release(ctx: CliContext, allocation_id: int, as_json: bool) -> None:
    """Release one allocation (other holders of a duplicate MAC keep it)."""
    with ctx.session(write=True) as session:
        data = release_allocation(session, ctx.actor, allocation_id)
    emit(
        data,
        as_json=as_json,
        text=lambda d: (
            f"Released {d['mac']} from {d['owner_kind']} "
            f"'{d['owner_name']}' interface '{d['interface']}'."
        ),
    )


@main.command()
@click.argument("allocation_id", type=int)
@json_option
@pass_ctx
@handle_errors
def confirm(ctx: CliContext, allocation_id: int, as_json: bool) -> None:
    """Confirm a pending allocation."""
    with ctx.session(write=True) as session:
        data = allocation_data(confirm_allocation(session, ctx.actor, allocation_id))
    emit(data, as_json=as_json, text=_alloc_text)


@main.command("allocations")
@click.option("--mac")
@click.option("--pool", "pool_ref")
@click.option("--scope", "scope_ref")
@click.option("--owner-kind")
@click.option("--owner-name")
@click.option("--state", type=click.Choice(["allocated", "pending", "reserved"]))
@click.option("--limit", default=100, show_default=True)
@json_option
@pass_ctx
@handle_errors
def allocations(
    ctx: CliContext,
    mac: str | None,
    pool_ref: str | None,
    scope_ref: str | None,
    owner_kind: str | None,
    owner_name: str | None,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List allocations matching the filters."""
    with ctx.session() as session:
        page = find_allocations(
            session,
            mac=mac,
            state=state,
            owner_kind=owner_kind,
            owner_name=owner_name,
            pool_id=_find_pool(session, pool_ref).id if pool_ref else None,
            scope_id=get_scope(session, scope_ref).id if scope_ref else None,
            limit=limit,
        )
        data = {"total": page.total, "items": [allocation_data(a) for a in page.items]}
    emit(
        data,
        as_json=as_json,
        text=lambda d: (
            table(
                [
                    [
                        a["id"],
                        a["mac"],
                        a["state"],
                        a["scope"],
                        f"{a['owner']['kind']}/{a['owner']['name']}",
                        a["interface"],
                        a["pool"],
                    ]
                    for a in d["items"]
                ],
                ["ID", "MAC", "STATE", "SCOPE", "OWNER", "INTERFACE", "POOL"],
            )
            + (f"\n({d['total']} in all)" if d["total"] > len(d["items"]) else "")
        ),
    )


@main.command("mac")
@click.argument("mac")
@json_option
@pass_ctx
@handle_errors
def mac_command(ctx: CliContext, mac: str, as_json: bool) -> None:
    """Show who holds MAC and which pool's range contains it."""
    with ctx.session() as session:
        info = mac_info(session, mac)
        data = {
            "mac": str(info.mac),
            "pool": info.pool.name if info.pool else None,
            "holders": [allocation_data(a) for a in info.holders],
        }
    emit(
        data,
        as_json=as_json,
        text=lambda d: "\n".join(
            [
                f"{d['mac']}: in pool {repr(d['pool']) if d['pool'] else 'no pool range'}; "
                f"{len(d['holders'])} holder(s)",
                *[_alloc_text(h) for h in d["holders"]],
            ]
        ),
    )


@main.command("events")
@click.option("--action")
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_ctx
@handle_errors
def events(ctx: CliContext, action: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log, newest first."""
    with ctx.session() as session:
        page = list_events(session, action=action, limit=limit)
        data = [
            {
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "severity": e.severity,
                "details": e.details,
            }
            for e in page.items
        ]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [[r["at"][:19], r["severity"], r["actor"], r["action"], r["target"]] for r in rows],
            ["AT", "LEVEL", "ACTOR", "ACTION", "TARGET"],
        ),
    )


# --- access: tokens and users -------------------------------------------------------------


@main.group()
def token() -> None:
    """API bearer tokens (shown once, stored hashed)."""


@token.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(auth_services.ROLES))
@json_option
@pass_ctx
@handle_errors
def token_create(ctx: CliContext, name: str, role: str, as_json: bool) -> None:
    """Create a token; its value is printed once."""
    with ctx.session(write=True) as session:
        created, plaintext = auth_services.create_token(session, ctx.actor, name=name, role=role)
        data = {"token": plaintext, "name": created.name, "role": created.role, "id": created.id}
    emit(
        data,
        as_json=as_json,
        text=lambda d: (
            f"{d['token']}\n(token '{d['name']}', role "
            f"{d['role']}: store it now, it is not shown again)"
        ),
    )


@token.command("list")
@json_option
@pass_ctx
@handle_errors
def token_list(ctx: CliContext, as_json: bool) -> None:
    """List tokens (never their values)."""
    with ctx.session() as session:
        data = [
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "prefix": t.prefix,
                "created_at": t.created_at.isoformat(),
                "revoked": t.revoked_at is not None,
            }
            for t in auth_services.list_tokens(session)
        ]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [
                    r["id"],
                    r["name"],
                    r["role"],
                    r["prefix"] + "…",
                    "revoked" if r["revoked"] else "active",
                ]
                for r in rows
            ],
            ["ID", "NAME", "ROLE", "PREFIX", "STATUS"],
        ),
    )


@token.command("revoke")
@click.argument("name")
@pass_ctx
@handle_errors
def token_revoke(ctx: CliContext, name: str) -> None:
    """Revoke a token by name."""
    with ctx.session(write=True) as session:
        auth_services.revoke_token(session, ctx.actor, name)
    click.echo(f"Revoked token '{name}'.")


@main.group()
def user() -> None:
    """Admin UI accounts."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(auth_services.ROLES))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@json_option
@pass_ctx
@handle_errors
def user_create(
    ctx: CliContext, username: str, role: str, password_stdin: bool, as_json: bool
) -> None:
    """Create an account (the password is asked for, or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with ctx.session(write=True) as session:
        created = auth_services.create_user(
            session, ctx.actor, username=username, role=role, password=password
        )
        data = {"id": created.id, "username": created.username, "role": created.role}
    emit(data, as_json=as_json, text=lambda d: f"Created user '{d['username']}' ({d['role']}).")


@user.command("list")
@json_option
@pass_ctx
@handle_errors
def user_list(ctx: CliContext, as_json: bool) -> None:
    """List accounts."""
    with ctx.session() as session:
        data = [
            {"id": u.id, "username": u.username, "role": u.role, "disabled": u.disabled}
            for u in auth_services.list_users(session)
        ]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [r["id"], r["username"], r["role"], "disabled" if r["disabled"] else "active"]
                for r in rows
            ],
            ["ID", "USERNAME", "ROLE", "STATUS"],
        ),
    )


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
