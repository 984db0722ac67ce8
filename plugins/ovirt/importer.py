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

An export of more than :data:`CHUNK_VMS` VMs is written in chunks of that many VMs, each
planned again and written in its own short write transaction, so that other writers get the
lock in between (on SQLite an allocation would otherwise wait for the whole write). The chunks'
allocations are *staged* (:mod:`manager.services.staging`): pending, stamped with the import
and holding their MACs, made lasting together by one last short transaction. A chunk that
fails undoes the chunks before it; an importer that dies leaves staged rows that expire. So
the import stays all or nothing; pools and scopes it created stay (empty) after an undo.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.collector import collector_paused
from manager.core.errors import Conflict, InvalidScope, MacPoolError
from manager.services import (
    STAGE_TTL_SECONDS,
    Forecast,
    Pool,
    Scope,
    StalePlan,
    confirm_staged,
    get_scope,
    new_stamp,
    read_snapshot,
    record_event,
    release_staged,
)
from plugins.ovirt.errors import locate
from plugins.ovirt.mapping import Mapped, TopologyChange, effective_pool, map_pools, map_scopes
from plugins.ovirt.nics import OWNER_KIND, NicAllocator, Target, target_for
from plugins.ovirt.records import OvirtExport, OvirtVm
from plugins.ovirt.report import ImportReport

Progress = Callable[[int, int], None]
#: Opens a unit of work: ``units()`` a read transaction, ``units(write=True)`` a write one
#: (committed when the block succeeds), e.g. ``Database.session`` or ``unit_of_work``.
Units = Callable[..., AbstractContextManager[Session]]
#: Plans made ahead of the write lock before the import is planned inside it.
PLAN_ATTEMPTS = 3
#: VMs written per write transaction by a larger import (about 0.3 s of write lock on SQLite).
CHUNK_VMS = 5_000

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


@dataclass(frozen=True, slots=True)
class _Staging:
    """One chunk of a larger import: its allocations' stamp, and the MACs its NICs request
    (in any chunk), which no new MAC of a chunk may take."""

    stamp: str
    avoid: frozenset[int]


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
    staging: _Staging | None = None,
) -> _Plan:
    """Map the export and plan its NICs. ``locked``: inside the write transaction (mapping may
    create pools and scopes); otherwise read only (:class:`TopologyChange` if it would)."""
    report = ImportReport(dry_run=options.dry_run, reassign_bad_macs=options.reassign_bad_macs)
    report.warnings.extend(export.warnings)
    mapped, fallback, found = _map(session, actor, export, report, options=options, writes=locked)
    placed = _place(session, export, mapped, fallback)
    allocator = NicAllocator(
        session,
        actor,
        reassign_bad_macs=options.reassign_bad_macs,
        report=report,
        locked=locked,
        stage=None if staging is None else staging.stamp,
        avoid=frozenset() if staging is None else staging.avoid,
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
    event: bool = True,
) -> None:
    """Write a planned import and (``event``) its audit event (``verify``: check the mapping
    first)."""
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
    if event:
        _record_import(session, actor, plan.report, options=options, sources=sources)


def _record_import(
    session: Session,
    actor: Actor,
    report: ImportReport,
    *,
    options: ImportOptions,
    sources: Sequence[str],
    **details: object,
) -> None:
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
            **details,
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
    staging: _Staging | None = None,
    event: bool = True,
) -> ImportReport:
    """Import inside a savepoint of ``session``'s transaction, planned and written in it: kept
    when applying a clean import, rolled back otherwise. ``staging``: the import is one chunk of
    a larger one (its allocations staged); ``event``: record the import's audit event.

    A dry run returns the report (``refused`` tells whether applying would be refused).
    Applying an import with bad MACs raises :class:`ImportRefused` carrying the report. Any
    other error rolls everything back and propagates.
    """
    savepoint = session.begin_nested()
    try:
        plan = _plan(
            session,
            actor,
            export,
            options=options,
            locked=True,
            progress=progress,
            staging=staging,
        )
        report = plan.report
        if options.dry_run or report.refused:
            plan.forecast.discard()
        else:
            _write(
                session,
                actor,
                export,
                plan,
                options=options,
                sources=sources,
                verify=False,
                event=event,
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


def import_in_phases(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
    writing: Progress | None = None,
    chunk_vms: int | None = None,
) -> ImportReport:
    """Import with the write lock held only to write (see the module docstring).

    Same answers as :func:`run_import`: the report of a dry run, :class:`ImportRefused` for an
    import with bad MACs, any other error propagated with nothing written (in the end: see
    the module docstring for a chunked write). ``progress``: the planning's, per NIC;
    ``writing``: a chunked write's, per NIC written; ``chunk_vms``: VMs per chunk
    (:data:`CHUNK_VMS`).
    """
    chunk = CHUNK_VMS if chunk_vms is None else chunk_vms
    # No cyclic collection meanwhile: a full one walks the export's 10^5 objects, for about a
    # second in which no other thread of the process (an API request, an allocation) runs.
    with collector_paused():
        return _import(units, actor, export, options, sources, progress, writing, chunk)


def _import(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    options: ImportOptions,
    sources: Sequence[str],
    progress: Progress | None,
    writing: Progress | None,
    chunk: int,
) -> ImportReport:
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        plan = _plan_ahead(units, actor, export, options=options, progress=progress)
        if plan is None:
            break
        report = plan.report
        if options.dry_run:
            return report
        if report.refused:
            raise ImportRefused(report)
        if len(export.vms) > chunk:
            plan.forecast.discard()
            return _apply_in_chunks(
                units,
                actor,
                export,
                options=options,
                sources=sources,
                progress=writing,
                chunk_vms=chunk,
            )
        if not _written(
            units, actor, export, plan, options=options, sources=sources, tried=attempt
        ):
            continue
        report.applied = True
        return report
    with units(write=True) as session:
        return run_import(
            session, actor, export, options=options, sources=sources, progress=progress
        )


def _plan_ahead(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    progress: Progress | None,
    staging: _Staging | None = None,
) -> _Plan | None:
    """Plan in a read unit; None when the import must be planned in the write lock."""
    with units() as session:
        read_snapshot(session)  # the plan reads one state of the database throughout
        try:
            return _plan(
                session,
                actor,
                export,
                options=options,
                locked=False,
                progress=progress,
                staging=staging,
            )
        except TopologyChange as change:
            log.info("oVirt import planned in the write lock: %s", change)
            return None


def _written(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    plan: _Plan,
    *,
    options: ImportOptions,
    sources: Sequence[str] | None,
    tried: int,
) -> bool:
    """Write a plan made ahead in a short write unit; False when it went stale meanwhile.

    ``sources``: the import's, for its audit event; None for a chunk (no event of its own)."""
    try:
        with units(write=True) as session:
            _write(
                session,
                actor,
                export,
                plan,
                options=options,
                sources=sources or (),
                verify=True,
                event=sources is not None,
            )
    except StalePlan as stale:
        log.info("oVirt import plan %d of %d went stale: %s", tried, PLAN_ATTEMPTS, stale)
        return False
    return True


def _apply_in_chunks(
    units: Units,
    actor: Actor,
    export: OvirtExport,
    *,
    options: ImportOptions,
    sources: Sequence[str],
    progress: Progress | None,
    chunk_vms: int,
) -> ImportReport:
    """Write the export ``chunk_vms`` VMs at a time, staged, then confirm it all at once."""
    stamp = new_stamp("import")
    staging = _Staging(
        stamp, frozenset(nic.mac for vm in export.vms for nic in vm.nics if nic.mac is not None)
    )
    merged = ImportReport(dry_run=False, reassign_bad_macs=options.reassign_bad_macs)
    merged.warnings.extend(export.warnings)
    total, written = export.nic_count, 0
    try:
        for start in range(0, len(export.vms), chunk_vms):
            part = dataclasses.replace(
                export, vms=export.vms[start : start + chunk_vms], warnings=()
            )
            report = _write_chunk(units, actor, part, options=options, staging=staging)
            if start == 0:  # the first chunk created what the import creates
                merged.pools, merged.scopes = report.pools, report.scopes
            merged.vms.extend(report.vms)
            if report.refused:  # a MAC was taken since the import was planned
                raise ImportRefused(merged)
            written += part.nic_count
            if progress is not None:
                progress(written, total)
        with units(write=True) as session:
            confirmed = confirm_staged(
                session,
                actor,
                stamp,
                owner_kind=OWNER_KIND,
                owner_uids=[vm.id for vm in export.vms],
            )
            _record_import(
                session,
                actor,
                merged,
                options=options,
                sources=sources,
                chunks=-(-len(export.vms) // chunk_vms),
                confirmed=confirmed,
            )
    except BaseException:
        _undo(units, actor, stamp)
        raise
    merged.applied = True
    return merged


def _write_chunk(
    units: Units, actor: Actor, part: OvirtExport, *, options: ImportOptions, staging: _Staging
) -> ImportReport:
    """Plan one chunk and write it staged (planned in the write lock after stale plans)."""
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        plan = _plan_ahead(units, actor, part, options=options, progress=None, staging=staging)
        if plan is None:
            break
        if plan.report.refused:
            plan.forecast.discard()
            return plan.report
        if _written(units, actor, part, plan, options=options, sources=None, tried=attempt):
            return plan.report
    try:
        with units(write=True) as session:
            return run_import(session, actor, part, options=options, staging=staging, event=False)
    except ImportRefused as refused:
        return refused.report


def _undo(units: Units, actor: Actor, stamp: str) -> None:
    """Release what the chunks written so far staged; if that fails too, they expire."""
    try:
        while True:
            with units(write=True) as session:
                if release_staged(session, actor, stamp) == 0:
                    return
    except Exception:
        log.exception(
            "undoing a failed oVirt import failed: its staged allocations (%s) expire within %d s",
            stamp,
            STAGE_TTL_SECONDS,
        )


__all__ = [
    "CHUNK_VMS",
    "PLAN_ATTEMPTS",
    "ImportOptions",
    "ImportRefused",
    "import_in_phases",
    "run_import",
]
