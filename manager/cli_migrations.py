"""``macpool migration``: check a migration before it runs, complete its hand-overs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from manager.cli_support import CliContext, emit, fail, handle_errors, json_option, pass_ctx, table
from manager.plugins import migration_sources
from manager.presenters import allocation_data, migration_check_data, source_vms
from manager.services import complete_handovers, get_scope
from manager.services.migration_check import SourceVm, check_migration

#: The largest source-VM file ``migration check`` reads.
MAX_FILE_BYTES = 64 * 1024 * 1024


@click.group()
def migration() -> None:
    """Move VMs with their MACs (oVirt → KubeVirt, KubeVirt → KubeVirt)."""


def check_text(data: dict[str, Any]) -> str:
    """A migration check as a table, then the verdict."""
    rows = [(n["vm_name"], n["nic"], n["mac"], n["status"], n["message"]) for n in data["nics"]]
    counts = ", ".join(f"{count} {status}" for status, count in data["counts"].items())
    verdict = "passes" if data["passes"] else "FAILS: a NIC is in conflict"
    return (
        table(rows, ["VM", "NIC", "MAC", "STATUS", "DETAIL"])
        + f"\n\nInto {data['scope']} (pool '{data['pool']}'): {counts}. The plan {verdict}."
    )


def _sources(source: Path) -> list[SourceVm]:
    """Source VMs from a JSON plan, else from an export a plugin reads (an oVirt export)."""
    if source.is_file() and source.stat().st_size <= MAX_FILE_BYTES:
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            document = None
        if isinstance(document, list) or (isinstance(document, dict) and "vms" in document):
            return source_vms(document)
    found = migration_sources(source)
    if found is None:
        fail(f"{source}: neither a JSON plan nor an export an installed plugin reads.")
    assert found is not None
    return found


@migration.command("check")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--scope", "scope_path", required=True, help="Target scope, e.g. /kubernetes/ns.")
@json_option
@pass_ctx
@handle_errors
def check(ctx: CliContext, source: Path, scope_path: str, as_json: bool) -> None:
    """Would the VMs in SOURCE keep their MACs in the target scope? Writes nothing.

    SOURCE is a JSON plan, {"vms": [{"id": ..., "name": ..., "nics": [{"name": ..., "mac":
    ...}]}]}, or any oVirt export ``macpool import ovirt`` reads (OVF, OVA, export domain,
    REST API export, engine backup). Exits 1 when a NIC is in conflict.
    """
    vms = _sources(source)
    with ctx.session() as session:
        data = migration_check_data(check_migration(session, scope=scope_path, vms=vms))
    emit(data, as_json=as_json, text=check_text)
    if not data["passes"]:
        fail(f"the plan does not pass: {data['counts']['conflict']} NIC(s) in conflict.")


@migration.command("complete")
@click.option("--plan", help="Complete every hand-over of this migration plan (its uid).")
@click.option("--allocation", "allocation_id", type=int, help="Complete one allocation's.")
@click.option("--scope", "scope_path", help="With --vm: the VM's scope, e.g. /kubernetes/ns.")
@click.option("--vm", "vm_name", help="With --scope: complete this VM's hand-overs.")
@json_option
@pass_ctx
@handle_errors
def complete(
    ctx: CliContext,
    plan: str | None,
    allocation_id: int | None,
    scope_path: str | None,
    vm_name: str | None,
    as_json: bool,
) -> None:
    """Make hand-overs final: the source VM gives its MACs up, a later delete frees them."""
    if (scope_path is None) != (vm_name is None):
        fail("--scope and --vm go together.", 2)
    with ctx.session(write=True) as session:
        scope_id = None if scope_path is None else get_scope(session, scope_path).id
        done = complete_handovers(
            session,
            ctx.actor,
            plan=plan,
            allocation_id=allocation_id,
            scope_id=scope_id,
            owner_name=vm_name,
        )
        data = [allocation_data(a) for a in done]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: (
            f"Completed {len(rows)} hand-over(s)."
            + "".join(f"\n  {r['mac']}  {r['owner']['name']} {r['interface']}" for r in rows)
        ),
    )


__all__ = ["migration"]
