"""Import an oVirt export into MacPool: pools, scopes and every VM NIC's MAC, dry run first.

An import is planned, then written, all or nothing. A dry run (the default) and a refused
import write nothing, and a dry run reports exactly what applying would do. Re-importing the
same export changes nothing: pools, scopes and allocations that already match are reported as
unchanged.

:func:`import_in_phases` (what the CLI, the API, the UI and background jobs call) keeps the
write lock short: it maps and plans in a read transaction (the allocation kernel's forecast:
:class:`~manager.services.Forecast`), then writes the plan in a short write transaction that
first checks that nothing the plan depended on changed. A plan that went stale is made again
(up to :data:`PLAN_ATTEMPTS` times); after that, and when the import must create or change
pools or scopes (a first import of an estate), it is planned and written inside one write
transaction, as :func:`run_import` does in the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import Conflict, InvalidScope, MacPoolError
from manager.services import (
    Forecast,
    Pool,
    Scope,
    StalePlan,
    get_scope,
    read_snapshot,
    record_event,
)
from plugins.ovirt.errors import locate
from plugins.ovirt.mapping import Mapped, TopologyChange, effective_pool, map_pools, map_scopes
from plugins.ovirt.nics import NicAllocator, Target, target_for
from plugins.ovirt.records import OvirtExport, OvirtVm
from plugins.ovirt.report import ImportReport

Progress = Callable[[int, int], None]
#: Opens a unit of work: ``units()`` a read transaction, ``units(write=True)`` a write one
#: (committed when the block succeeds), e.g. ``Database.session`` or ``unit_of_work``.
Units = Callable[..., AbstractContextManager[Session]]
#: Plans made ahead of the write lock before the import is planned inside it.
PLAN_ATTEMPTS = 3

log = logging.getLogger("macpool.ovirt")
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
            targets[scope.id] = target_for(scope, effective_pool(session, scope, mapped))
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


@dataclass(slots=True)
class _Plan:
    """An import mapped and planned: its report, the NICs' forecast, what the mapping found."""

    report: ImportReport
    forecast: Forecast
    mapped: Mapped
    #: What the VMs' placement depends on (see :func:`_map`), for the write to check.
    mapping: tuple[object, ...]


def _map(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    report: ImportReport,
    *,
    options: ImportOptions,
    writes: bool,
) -> tuple[Mapped, Scope | None, tuple[object, ...]]:
    """Map pools and scopes; (what they became, the fallback scope, a fingerprint of both).

    The fingerprint is what the VMs' placement depends on besides the scopes' pools (which the
    topology generation covers): equal fingerprints place every VM alike."""
    fallback = None if options.scope is None else get_scope(session, options.scope)
    mapped = map_pools(session, actor, export, report, writes=writes)
    map_scopes(session, actor, export, mapped, report, writes=writes)
    found = (
        tuple(report.pools),
        tuple(report.scopes),
        {pool_id: pool.id for pool_id, pool in mapped.pools.items()},
        {cluster_id: scope.id for cluster_id, scope in mapped.clusters.items()},
        {name: [s.id for s in scopes] for name, scopes in mapped.clusters_by_name.items()},
        None if fallback is None else fallback.id,
    )
    return mapped, fallback, found


def _plan(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    locked: bool,
    progress: Progress | None,
) -> _Plan:
    """Map the export and plan its NICs. ``locked``: inside the write transaction (mapping may
    create pools and scopes); otherwise read only (:class:`TopologyChange` if it would)."""
    report = ImportReport(dry_run=options.dry_run, reassign_bad_macs=options.reassign_bad_macs)
    report.warnings.extend(export.warnings)
    mapped, fallback, found = _map(session, actor, export, report, options=options, writes=locked)
    placed = _place(session, export, mapped, fallback)
    allocator = NicAllocator(
        session, actor, reassign_bad_macs=options.reassign_bad_macs, report=report, locked=locked
    )
    forecast = allocator.plan(placed, progress=progress, planned_pools=mapped.planned_pools)
    return _Plan(report, forecast, mapped, found)


def _write(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    plan: _Plan,
    *,
    options: ImportOptions,
    sources: Sequence[str],
    verify: bool,
) -> None:
    """Write a planned import and its audit event (``verify``: check the mapping first)."""
    if not verify:
        plan.forecast.write(session)
    elif plan.mapped.planned_pools or plan.mapped.planned_scopes:
        plan.forecast.write(
            session, topology=lambda: _create_topology(session, actor, export, plan, options)
        )
    else:
        scratch = ImportReport(dry_run=True, reassign_bad_macs=options.reassign_bad_macs)
        try:
            _, _, found = _map(session, actor, export, scratch, options=options, writes=False)
        except TopologyChange as exc:
            raise StalePlan("Pools or scopes changed while the import was planned.") from exc
        if found != plan.mapping:
            raise StalePlan("Pools or scopes changed while the import was planned.")
        plan.forecast.write(session)
    record_event(
        session,
        actor,
        action="import.ovirt",
        target_type="import",
        target="oVirt export",
        details={
            "sources": list(sources)[:100],
            "reassign_bad_macs": options.reassign_bad_macs,
            "totals": plan.report.totals(),
        },
    )


def _create_topology(
    session: Session, actor: Actor, export: OvirtExport, plan: _Plan, options: ImportOptions
) -> tuple[dict[int, Pool], dict[int, int]]:
    """Create the pools and scopes the plan assumed (the write's first step); the created
    pools and scope ids by the plan's made-up ids. Mapped otherwise than planned: stale."""
    scratch = ImportReport(dry_run=True, reassign_bad_macs=options.reassign_bad_macs)
    try:
        mapped, _, found = _map(session, actor, export, scratch, options=options, writes=True)
    except MacPoolError as exc:  # planned without error: something changed meanwhile
        raise StalePlan(f"Mapping the export failed after it was planned: {exc}") from exc
    if scratch.pools != plan.report.pools or scratch.scopes != plan.report.scopes:
        raise StalePlan("Pools or scopes changed while the import was planned.")
    planned = plan.mapped
    pools = {
        pool.id: mapped.pools[ovirt_id] for ovirt_id, pool in planned.pools.items() if pool.id < 0
    }
    scopes = {s.id: get_scope(session, s.path).id for s in planned.planned_scopes}
    pool_ids = {k: v.id for k, v in pools.items()}
    expected = _translated(plan.mapping, pool_ids, scopes)
    if found != expected:
        raise StalePlan("Pools or scopes changed while the import was planned.")
    return pools, scopes


def _translated(
    found: tuple[object, ...], pools: dict[int, int], scopes: dict[int, int]
) -> tuple[object, ...]:
    """A mapping fingerprint (see :func:`_map`) with made-up ids replaced by created ones."""
    outcomes_pools, outcomes_scopes, by_pool, by_cluster, by_name, fallback = found
    assert isinstance(by_pool, dict) and isinstance(by_cluster, dict)
    assert isinstance(by_name, dict)
    return (
        outcomes_pools,
        outcomes_scopes,
        {k: pools.get(v, v) for k, v in by_pool.items()},
        {k: scopes.get(v, v) for k, v in by_cluster.items()},
        {k: [scopes.get(v, v) for v in ids] for k, ids in by_name.items()},
        fallback,
    )


def run_import(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Import inside a savepoint of ``session``'s transaction, planned and written in it: kept
    when applying a clean import, rolled back otherwise.

    A dry run returns the report (``refused`` tells whether applying would be refused).
    Applying an import with bad MACs raises :class:`ImportRefused` carrying the report. Any
    other error rolls everything back and propagates.
    """
    savepoint = session.begin_nested()
    try:
        plan = _plan(session, actor, export, options=options, locked=True, progress=progress)
        report = plan.report
        if options.dry_run or report.refused:
            plan.forecast.discard()
        else:
            _write(session, actor, export, plan, options=options, sources=sources, verify=False)
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


def import_in_phases(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Import with the write lock held only to write (see the module docstring).

    Same answers as :func:`run_import`: the report of a dry run, :class:`ImportRefused` for an
    import with bad MACs, any other error propagated with nothing written.
    """
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        with units() as session:
            read_snapshot(session)  # the plan reads one state of the database throughout
            try:
                plan = _plan(
                    session, actor, export, options=options, locked=False, progress=progress
                )
            except TopologyChange as change:
                log.info("oVirt import planned in the write lock: %s", change)
                break
        report = plan.report
        if options.dry_run:
            return report
        if report.refused:
            raise ImportRefused(report)
        try:
            with units(write=True) as session:
                _write(session, actor, export, plan, options=options, sources=sources, verify=True)
        except StalePlan as stale:
            log.info("oVirt import plan %d of %d went stale: %s", attempt, PLAN_ATTEMPTS, stale)
            continue
        report.applied = True
        return report
    with units(write=True) as session:
        return run_import(
            session, actor, export, options=options, sources=sources, progress=progress
        )


__all__ = [
    "PLAN_ATTEMPTS",
    "ImportOptions",
    "ImportRefused",
    "import_in_phases",
    "run_import",
]
