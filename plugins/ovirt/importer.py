"""Import an oVirt export into MacPool: pools, scopes and every VM NIC's MAC, dry run first.

:func:`run_import` does the whole import through the services inside a SAVEPOINT of the
caller's transaction. A dry run (the default) and a refused import roll the savepoint back,
so a dry run computes exactly what applying would do, and writes nothing. Applying releases
the savepoint into the caller's transaction, which commits it (the CLI command or the
request owns the transaction): all or nothing. Re-importing the same export changes nothing:
pools, scopes and allocations that already match are reported as unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import Conflict, InvalidScope
from manager.services import Scope, get_scope, record_event, resolve_pool
from plugins.ovirt.errors import locate
from plugins.ovirt.mapping import Mapped, map_pools, map_scopes
from plugins.ovirt.nics import NicAllocator, Target, target_for
from plugins.ovirt.records import OvirtExport, OvirtVm
from plugins.ovirt.report import ImportReport

Progress = Callable[[int, int], None]
#: VMs named in the error when VMs have no target scope.
_SHOWN = 10


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to import: dry run or apply, whether to reassign bad MACs, the fallback scope."""

    dry_run: bool = True
    reassign_bad_macs: bool = False
    #: Scope (id or path) for VMs whose cluster is not in the export (single OVFs, OVAs).
    scope: str | None = None


class ImportRefused(Conflict):
    """The import was refused because of bad MACs; ``report`` names every one of them."""

    reason = "import_refused"

    def __init__(self, report: ImportReport) -> None:
        conflicts = report.conflicts
        shown = "; ".join(
            f"{locate(vm.source, vm=vm.name, nic=nic.name)}: {nic.message}"
            for vm, nic in conflicts[:5]
        )
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        super().__init__(
            f"The oVirt import is refused: {len(conflicts)} NIC(s) have bad MACs, nothing was "
            f"written. {shown}{more}. Fix them in oVirt or import with reassign_bad_macs.",
            details={"report": report.to_dict()},
        )
        self.report = report


def _place(
    session: Session, export: OvirtExport, mapped: Mapped, fallback: Scope | None
) -> list[tuple[OvirtVm, Target]]:
    """Each VM's target: its cluster's scope (by id, else by a unique name), else the fallback."""
    targets: dict[int, Target] = {}
    placed: list[tuple[OvirtVm, Target]] = []
    homeless: list[OvirtVm] = []
    for vm in export.vms:
        scope = mapped.clusters.get(vm.cluster_id or "")
        by_name = mapped.clusters_by_name.get(vm.cluster_name or "", [])
        if scope is None and len(by_name) == 1:
            scope = by_name[0]
        scope = scope or fallback
        if scope is None:
            homeless.append(vm)
            continue
        if scope.id not in targets:
            targets[scope.id] = target_for(scope, resolve_pool(session, scope).pool)
        placed.append((vm, targets[scope.id]))
    if homeless:
        names = ", ".join(locate(vm.source, vm=vm.label) for vm in homeless[:_SHOWN])
        more = f" and {len(homeless) - _SHOWN} more" if len(homeless) > _SHOWN else ""
        raise InvalidScope(
            f"{len(homeless)} VM(s) belong to no cluster of the export ({names}{more}); "
            "choose the scope to import them into (--scope PATH, or the 'scope' field).",
            field="scope",
            details={"vms": [vm.label for vm in homeless]},
        )
    return placed


def import_export(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    progress: Progress | None = None,
) -> ImportReport:
    """Map the export onto pools, scopes and allocations in ``session`` (no savepoint, no
    commit) and return the report. Errors that refuse the whole import (range overlaps, name
    clashes, unknown scope) raise; bad MACs are reported as conflicts."""
    report = ImportReport(dry_run=options.dry_run, reassign_bad_macs=options.reassign_bad_macs)
    report.warnings.extend(export.warnings)
    fallback = None if options.scope is None else get_scope(session, options.scope)
    mapped = map_pools(session, actor, export, report)
    map_scopes(session, actor, export, mapped, report)
    placed = _place(session, export, mapped, fallback)
    NicAllocator(session, actor, reassign_bad_macs=options.reassign_bad_macs, report=report).run(
        placed, progress=progress
    )
    return report


def run_import(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Import inside a savepoint: kept when applying a clean import, rolled back otherwise.

    A dry run returns the report (``refused`` tells whether applying would be refused).
    Applying an import with bad MACs raises :class:`ImportRefused` carrying the report. Any
    other error rolls everything back and propagates.
    """
    savepoint = session.begin_nested()
    try:
        report = import_export(session, actor, export, options=options, progress=progress)
        if not options.dry_run and not report.refused:
            record_event(
                session,
                actor,
                action="import.ovirt",
                target_type="import",
                target="oVirt export",
                details={
                    "sources": list(sources)[:100],
                    "reassign_bad_macs": options.reassign_bad_macs,
                    "totals": report.totals(),
                },
            )
    except BaseException:
        savepoint.rollback()
        raise
    if options.dry_run or report.refused:
        savepoint.rollback()
        if not options.dry_run:
            raise ImportRefused(report)
        return report
    savepoint.commit()
    report.applied = True
    return report


__all__ = ["ImportOptions", "ImportRefused", "import_export", "run_import"]
