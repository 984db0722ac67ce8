"""Top-level allocation commands: allocate, release, confirm, allocations, mac and events."""

from __future__ import annotations

from typing import Any

import click

from manager.cli_pools import find_pool
from manager.cli_support import CliContext, emit, handle_errors, json_option, pass_ctx, table
from manager.core.actor import Owner
from manager.presenters import allocation_data
from manager.services import (
    allocate_mac,
    confirm_allocation,
    find_allocations,
    get_scope,
    list_events,
    mac_info,
    release_allocation,
)


def _alloc_text(data: dict[str, Any]) -> str:
    expires = f", expires {data['expires_at']}" if data["expires_at"] else ""
    outside = "" if data["in_range"] else " (outside the pool's ranges)"
    return (
        f"{data['mac']}  {data['state']}{expires}{outside}\n"
        f"  {data['owner']['kind']} '{data['owner']['name']}' interface '{data['interface']}'"
        f" in {data['scope']} (pool '{data['pool']}'), allocation {data['id']}"
    )


@click.command()
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


@click.command()
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
            f"'{d['owner_name']}' interface '{d['interface']}'"
            + (
                f"; the hand-over was not final, so it went back to {d['returned_to']['owner_kind']}"
                f" '{d['returned_to']['owner_name']}'."
                if "returned_to" in d
                else "."
            )
        ),
    )


@click.command()
@click.argument("allocation_id", type=int)
@json_option
@pass_ctx
@handle_errors
def confirm(ctx: CliContext, allocation_id: int, as_json: bool) -> None:
    """Confirm a pending allocation."""
    with ctx.session(write=True) as session:
        data = allocation_data(confirm_allocation(session, ctx.actor, allocation_id))
    emit(data, as_json=as_json, text=_alloc_text)


@click.command("allocations")
@click.option("--mac")
@click.option("--pool", "pool_ref")
@click.option("--scope", "scope_ref")
@click.option("--owner-kind")
@click.option("--owner-name")
@click.option("--state", type=click.Choice(["allocated", "pending", "reserved"]))
@click.option(
    "--handover", type=click.Choice(["pending", "final"]), help="Migration hand-over state."
)
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
    handover: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List allocations matching the filters."""
    with ctx.session() as session:
        page = find_allocations(
            session,
            mac=mac,
            state=state,
            handover=handover,
            owner_kind=owner_kind,
            owner_name=owner_name,
            pool_id=find_pool(session, pool_ref).id if pool_ref else None,
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
                        a["state"] + (f" (hand-over {a['handover']})" if a["handover"] else ""),
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


@click.command("mac")
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


@click.command("events")
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


__all__ = [
    "allocate",
    "allocations",
    "confirm",
    "events",
    "mac_command",
    "release",
]
