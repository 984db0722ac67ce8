"""Map oVirt pools, data centers and clusters onto MacPool pools and scopes.

Rules (DESIGN §6):

- Each oVirt pool becomes a MacPool pool with its normalized ranges and ``allow_duplicates``.
  A pool of the same name (case-insensitively) with the same ranges and ``allow_duplicates``
  is reused ("unchanged"); one with different content refuses the import. A range overlapping
  another pool refuses it too (the services' :class:`RangeOverlap` names both pools).
- oVirt's default pool (``default_pool=true``, usually named "Default") clashes by name with
  MacPool's own default pool. When their ranges and ``allow_duplicates`` are identical it is
  *merged* into MacPool's default pool; otherwise it is imported as ``ovirt-<name>``.
- A pool left without any usable range is skipped (a pool needs one); scopes that used it
  inherit their parent's pool and the report says so.
- Data centers become ``datacenter`` scopes under ``/``; clusters become ``cluster`` scopes
  under their data center (or under ``/`` when it is unknown). A scope is assigned the pool
  its oVirt object references. A cluster referencing no pool, in a data center referencing
  none either, gets oVirt's default pool (what the engine did). An existing scope keeps a
  pool already assigned to it (reported as a warning when the export names another).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import InvalidInput, MacPoolError, NameInUse, NotFound
from manager.core.ranges import MacRange, RangeSet
from manager.services import (
    Pool,
    Scope,
    assign_pool,
    create_pool,
    create_scope,
    find_child_scope,
    find_pool_by_name,
    get_default_pool,
    get_pool,
    get_scope,
    planned_pool,
    planned_scope,
    pool_ranges,
    resolve_pool,
)
from plugins.ovirt.errors import locate
from plugins.ovirt.records import (
    Notice,
    NoticeKind,
    OvirtCluster,
    OvirtExport,
    OvirtPool,
)
from plugins.ovirt.report import ImportReport, PoolOutcome, ScopeOutcome
from scopes import ROOT_PATH

#: Prefix of the name under which oVirt's default pool is imported when it cannot merge.
RENAMED_PREFIX = "ovirt-"


class TopologyChange(Exception):
    """Mapping would create or change a pool or scope, and may not write (a plan made ahead)."""


@dataclass(slots=True)
class Mapped:
    """What the export's objects became: pools by oVirt pool id, scopes by cluster id/name.

    Mapped without writing, pools and scopes to be created are *planned*: transient objects
    with made-up negative ids (``planned_pools``, ``planned_scopes``), created by the write.
    """

    pools: dict[str, Pool] = field(default_factory=dict)
    default_pool: Pool | None = None
    clusters: dict[str, Scope] = field(default_factory=dict)
    clusters_by_name: dict[str, list[Scope]] = field(default_factory=dict)
    planned_pools: list[Pool] = field(default_factory=list)
    planned_scopes: list[Scope] = field(default_factory=list)

    def planned_pool_named(self, name: str) -> Pool | None:
        return next((p for p in self.planned_pools if p.name_key == name.lower()), None)

    def planned_child(self, parent: Scope, name: str) -> Scope | None:
        return next(
            (s for s in self.planned_scopes if s.parent_id == parent.id and s.name == name), None
        )


def _prefixed(exc: MacPoolError, where: str) -> MacPoolError:
    """The same error with the export location in front of its message."""
    return type(exc)(f"{where}: {exc.message}", field=exc.field, details=exc.details)


def _same(pool: Pool, ranges: RangeSet, allow_duplicates: bool) -> bool:
    have = [(r.start, r.end) for r in pool_ranges(pool)]
    return have == [(r.start, r.end) for r in ranges] and pool.allow_duplicates == allow_duplicates


def _map_pool(
    session: Session,
    actor: Actor,
    pool: OvirtPool,
    report: ImportReport,
    *,
    mapped: Mapped,
    writes: bool,
) -> Pool | None:
    where = locate(pool.source) + f", MAC pool '{pool.name}'"
    ranges = RangeSet(MacRange(r.start, r.end) for r in pool.ranges)
    name = pool.name.strip() or f"{RENAMED_PREFIX}{pool.id}"
    shown = [str(r) for r in pool.ranges]

    def outcome(status: str, target: str, message: str = "") -> None:
        report.pools.append(
            PoolOutcome(pool.id, pool.name, target, status, shown, pool.allow_duplicates, message)
        )

    if not pool.ranges:
        message = "skipped: it has no usable range; scopes using it inherit their parent's pool."
        outcome("skipped", name, message)
        report.warnings.append(
            Notice(pool.source, NoticeKind.POOL_SKIPPED, f"MAC pool '{name}' {message}", pool=name)
        )
        return None
    if pool.default_pool:
        default = get_default_pool(session)
        if default.name_key == name.lower():
            if _same(default, ranges, pool.allow_duplicates):
                outcome("merged", default.name, "oVirt's default pool equals MacPool's default.")
                return default
            renamed = f"{RENAMED_PREFIX}{name}"
            report.warnings.append(
                Notice(
                    pool.source,
                    NoticeKind.POOL_RENAMED,
                    f"oVirt's default MAC pool '{name}' differs from MacPool's default pool of "
                    f"the same name; imported as '{renamed}'.",
                    pool=name,
                )
            )
            name = renamed
    try:
        existing: Pool | None = find_pool_by_name(session, name)
    except NotFound:
        existing = mapped.planned_pool_named(name)
    if existing is not None:
        if _same(existing, ranges, pool.allow_duplicates):
            outcome("unchanged", existing.name)
            return existing
        raise NameInUse(
            f"{where}: a pool named '{existing.name}' already exists with other ranges or "
            f"another duplicates setting ({', '.join(str(r) for r in pool_ranges(existing))}; "
            f"allow_duplicates {existing.allow_duplicates}); rename one of them first.",
            field="name",
            details={"pool": existing.name, "pool_id": existing.id, "source": pool.source},
        )
    if not writes:
        return _plan_pool(session, pool, name, ranges, where, mapped, outcome)
    try:
        created = create_pool(
            session,
            actor,
            name=name,
            ranges=list(ranges),
            description=pool.description or f"Imported from oVirt (pool {pool.id}).",
            allow_duplicates=pool.allow_duplicates,
        )
    except MacPoolError as exc:
        raise _prefixed(exc, where) from exc
    outcome("created", created.name)
    return created


def _plan_pool(
    session: Session,
    pool: OvirtPool,
    name: str,
    ranges: RangeSet,
    where: str,
    mapped: Mapped,
    outcome: Callable[[str, str], None],
) -> Pool:
    """The pool to create, checked as creating it checks it, not written."""
    for other in mapped.planned_pools:
        if any(_overlaps(other, r) for r in ranges):
            # Creating it would be refused (an overlap with another pool of the export): the
            # import is mapped in the write transaction, which raises the services' error.
            raise TopologyChange(f"MAC pool '{name}' overlaps pool '{other.name}'")
    try:
        planned = planned_pool(
            session,
            name=name,
            ranges=list(ranges),
            description=pool.description or f"Imported from oVirt (pool {pool.id}).",
            allow_duplicates=pool.allow_duplicates,
        )
    except MacPoolError as exc:
        raise _prefixed(exc, where) from exc
    planned.id = -1 - len(mapped.planned_pools)
    mapped.planned_pools.append(planned)
    outcome("created", planned.name)
    return planned


def _overlaps(pool: Pool, rng: MacRange) -> bool:
    return any(r.start <= rng.end and rng.start <= r.end for r in pool_ranges(pool))


def map_pools(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    report: ImportReport,
    *,
    writes: bool = True,
) -> Mapped:
    """Create or reuse a pool for every oVirt pool; returns them by oVirt pool id.

    ``writes=False``: plan the pools to create instead (see :class:`Mapped`)."""
    mapped = Mapped()
    for pool in export.pools:
        target = _map_pool(session, actor, pool, report, mapped=mapped, writes=writes)
        if target is not None:
            mapped.pools[pool.id] = target
            if pool.default_pool:
                mapped.default_pool = target
    return mapped


def _lookup_pool(
    mapped: Mapped, pool_id: str | None, *, source: str, owner: str, report: ImportReport
) -> Pool | None:
    if pool_id is None:
        return None
    pool = mapped.pools.get(pool_id)
    if pool is None and not any(p.ovirt_id == pool_id for p in report.pools):
        report.warnings.append(
            Notice(
                source,
                NoticeKind.UNKNOWN_REFERENCE,
                f"{owner} references MAC pool {pool_id}, which is not in the export; it "
                "inherits its parent's pool.",
            )
        )
    return pool


def _ensure(
    session: Session,
    actor: Actor,
    *,
    parent: Scope,
    kind: str,
    name: str,
    pool: Pool | None,
    source: str,
    report: ImportReport,
    mapped: Mapped,
    writes: bool,
) -> Scope:
    where = locate(source) + f", {kind} '{name}'"
    found = find_child_scope(session, parent=parent, name=name) or mapped.planned_child(
        parent, name
    )
    if found is None:
        fields: dict[str, Any] = {
            "kind": kind,
            "name": name,
            "parent": parent,
            "pool_id": None if pool is None else pool.id,
            "description": "Imported from oVirt.",
        }
        try:
            if writes:
                scope = create_scope(session, actor, **fields)
            else:  # planned ahead of the write: checked as create_scope checks, not stored
                scope = planned_scope(session, **fields)
                scope.id = -1 - len(mapped.planned_scopes)
                mapped.planned_scopes.append(scope)
        except MacPoolError as exc:
            raise _prefixed(exc, where) from exc
        report.scopes.append(ScopeOutcome(scope.path, kind, "created", _name(pool)))
        return scope
    if found.kind != kind:
        raise InvalidInput(
            f"{where}: scope '{found.path}' already exists as a {found.kind} scope.",
            details={"path": found.path, "source": source},
        )
    if pool is None or found.pool_id == pool.id:
        current = None if found.pool_id is None else _pool(session, mapped, found.pool_id)
        report.scopes.append(ScopeOutcome(found.path, kind, "unchanged", _name(current)))
    elif found.pool_id is None:
        if not writes:
            raise TopologyChange(f"scope {found.path} would be assigned pool '{pool.name}'")
        assign_pool(session, actor, found, pool.id)
        report.scopes.append(ScopeOutcome(found.path, kind, "assigned", pool.name))
    else:
        current = _pool(session, mapped, found.pool_id)
        message = (
            f"scope {found.path} already uses pool '{_name(current)}'; the export assigns "
            f"'{pool.name}'. The scope keeps '{_name(current)}'."
        )
        report.scopes.append(ScopeOutcome(found.path, kind, "kept", _name(current), message))
        report.warnings.append(Notice(source, NoticeKind.SCOPE_POOL_KEPT, message))
    return found


def _pool(session: Session, mapped: Mapped, pool_id: int) -> Pool | None:
    """A pool by id, planned ones included."""
    if pool_id < 0:
        return next(p for p in mapped.planned_pools if p.id == pool_id)
    return get_pool(session, pool_id)


def effective_pool(session: Session, scope: Scope, mapped: Mapped) -> Pool:
    """The pool a scope's allocations take MACs from, planned scopes and pools included."""
    planned = {s.id: s for s in mapped.planned_scopes}
    while scope.id < 0:
        if scope.pool_id is not None:
            found = _pool(session, mapped, scope.pool_id)
            assert found is not None  # a foreign key will guarantee it
            return found
        assert scope.parent_id is not None  # only the engine scope has none
        parent = planned.get(scope.parent_id) or get_scope(session, scope.parent_id)
        scope = parent
    return resolve_pool(session, scope).pool


def _name(pool: Pool | None) -> str | None:
    return None if pool is None else pool.name


def map_scopes(
    session: Session,
    actor: Actor,
    export: OvirtExport,
    mapped: Mapped,
    report: ImportReport,
    *,
    writes: bool = True,
) -> None:
    """Create or reuse a scope for every data center and cluster, with their pools.

    ``writes=False``: plan the scopes to create instead (see :class:`Mapped`); a scope whose
    pool would change raises :class:`TopologyChange`."""
    root = get_scope(session, ROOT_PATH)
    dcs: dict[str, tuple[Scope, Pool | None]] = {}
    for dc in export.data_centers:
        pool = _lookup_pool(
            mapped,
            dc.mac_pool_id,
            source=dc.source,
            owner=f"Data center '{dc.name}'",
            report=report,
        )
        scope = _ensure(
            session,
            actor,
            parent=root,
            kind="datacenter",
            name=dc.name,
            pool=pool,
            source=dc.source,
            report=report,
            mapped=mapped,
            writes=writes,
        )
        dcs[dc.id] = (scope, pool)
    for cluster in export.clusters:
        _map_cluster(
            session,
            actor,
            cluster=cluster,
            dcs=dcs,
            root=root,
            mapped=mapped,
            report=report,
            writes=writes,
        )


def _map_cluster(
    session: Session,
    actor: Actor,
    *,
    cluster: OvirtCluster,
    dcs: dict[str, tuple[Scope, Pool | None]],
    root: Scope,
    mapped: Mapped,
    report: ImportReport,
    writes: bool,
) -> None:
    parent, dc_pool = dcs.get(cluster.data_center_id or "", (root, None))
    if cluster.data_center_id and cluster.data_center_id not in dcs:
        report.warnings.append(
            Notice(
                cluster.source,
                NoticeKind.UNKNOWN_REFERENCE,
                f"Cluster '{cluster.name}' belongs to data center {cluster.data_center_id}, "
                "which is not in the export; its scope is placed under /.",
            )
        )
    pool = _lookup_pool(
        mapped,
        cluster.mac_pool_id,
        source=cluster.source,
        owner=f"Cluster '{cluster.name}'",
        report=report,
    )
    if cluster.mac_pool_id is None and dc_pool is None:
        pool = mapped.default_pool  # the engine gave such clusters its default pool
    scope = _ensure(
        session,
        actor,
        parent=parent,
        kind="cluster",
        name=cluster.name,
        pool=pool,
        source=cluster.source,
        report=report,
        mapped=mapped,
        writes=writes,
    )
    mapped.clusters[cluster.id] = scope
    mapped.clusters_by_name.setdefault(cluster.name, []).append(scope)


__all__ = [
    "RENAMED_PREFIX",
    "Mapped",
    "TopologyChange",
    "effective_pool",
    "map_pools",
    "map_scopes",
]
