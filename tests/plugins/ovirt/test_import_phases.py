"""The import as the channels run it: planned in a read transaction, written in a short one.

No timings: the tests record the order of the units of work and of the kernel's steps, and run
an allocation from another thread while the import is planning (SQLite and PostgreSQL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import MacInUse, NameInUse, RangeOverlap
from manager.core.mac import MacAddress
from manager.db import Allocation, AuditEvent, Database, Pool, Scope
from manager.services import add_range, allocate_mac, create_pool, create_scope, expire_pending
from manager.services import bulk_allocations as bulk_module
from plugins.ovirt import importer as importer_module
from plugins.ovirt.importer import (
    PLAN_ATTEMPTS,
    ImportOptions,
    ImportRefused,
    import_in_phases,
    run_import,
)
from plugins.ovirt.records import OvirtExport
from plugins.ovirt.report import ImportReport
from tests.services.recount import recount, stored

from .conftest import IMPORT_DEFAULT_RANGE
from .factories import cluster, counts, dc, export, mac, pool, vm

EAST = pool("p-east", "east", "02:00:00:00:00:00-02:00:00:00:00:ff")


def _estate(*vms: Any) -> OvirtExport:
    return export(
        pools=[EAST],
        data_centers=[dc("dc-1", "dc1", "p-east")],
        clusters=[cluster("c-1", "c1", dc_id="dc-1")],
        vms=list(vms),
    )


def _vms(count: int, first: int = 0) -> list[Any]:
    return [
        vm(f"v-{i}", f"vm{i}", f"02:00:00:00:00:{i:02x}", None, cluster_id="c-1")
        for i in range(first, first + count)
    ]


class Units:
    """``Database.session`` for the importer, logging each unit opened (and running a hook
    before a write unit begins: a concurrent change between plan and write)."""

    def __init__(self, database: Database, log: list[str]) -> None:
        self.database = database
        self.log = log
        self.before_write: Callable[[int], None] | None = None
        self.writes = 0

    @contextmanager
    def __call__(self, *, write: bool = False) -> Iterator[Session]:
        if write:
            self.writes += 1
            if self.before_write is not None:
                self.before_write(self.writes)
        self.log.append("write" if write else "read")
        with self.database.session(write=write) as session:
            yield session
        self.log.append("end")


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The log, with a "step" each time the kernel steps a request of the importer."""
    log: list[str] = []
    real = bulk_module._Batch.step

    def step(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.actor.name == "importer":
            log.append("step")
        real(self, *args, **kwargs)

    monkeypatch.setattr(bulk_module._Batch, "step", step)
    return log


def _apply(units: Units, data: OvirtExport, **options: Any) -> ImportReport:
    return import_in_phases(
        units, Actor("importer"), data, options=ImportOptions(**{"dry_run": False, **options})
    )


def _prepare_estate(db: Database) -> None:
    """The pool and scopes of ``_estate`` exist (a re-import's starting point)."""
    import_in_phases(Units(db, []), Actor("setup"), _estate(), options=ImportOptions(dry_run=False))


def _phases(log: list[str]) -> list[str]:
    """The log with the steps of one unit collapsed."""
    out: list[str] = []
    for entry in log:
        if entry == "step" and out and out[-1] == "step":
            continue
        out.append(entry)
    return out


def test_planned_in_a_read_unit_then_written_in_a_short_one(db: Database, steps: list[str]) -> None:
    _prepare_estate(db)
    steps.clear()
    report = _apply(Units(db, steps), _estate(*_vms(6)))
    assert report.applied and report.totals()["kept"] == 6 and report.totals()["new"] == 6
    # Every request is stepped inside the read unit; the write unit steps none.
    assert _phases(steps) == ["read", "step", "end", "write", "end"]


def test_a_dry_run_takes_no_write_unit(db: Database, steps: list[str]) -> None:
    _prepare_estate(db)
    steps.clear()
    report = import_in_phases(
        Units(db, steps), Actor("t"), _estate(*_vms(3)), options=ImportOptions()
    )
    assert not report.applied and report.totals()["kept"] == 3
    assert "write" not in steps
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 0


def test_an_allocation_during_planning_is_not_blocked(db: Database) -> None:
    """While the import plans, another thread allocates and commits (no write lock is held)."""
    _prepare_estate(db)
    with db.session(write=True) as s:
        other = create_pool(
            s, Actor("t"), name="other", ranges=["0c:00:00:00:00:00-0c:00:00:00:ff:ff"]
        )
        create_scope(s, Actor("t"), kind="datacenter", name="other", pool_id=other.id)
    log: list[str] = []
    finished = threading.Event()

    def allocate() -> None:
        with db.session(write=True) as s:
            allocate_mac(s, Actor("api"), scope="/other", owner=Owner("vm", "api"), interface="e")
        finished.set()

    def progress(done: int, total: int) -> None:
        if done == total and not finished.is_set():  # the plan is made, not written yet
            thread = threading.Thread(target=allocate)
            thread.start()
            thread.join(timeout=60)
            log.append("allocated during planning" if finished.is_set() else "blocked")

    units = Units(db, log)
    report = import_in_phases(
        units,
        Actor("importer"),
        _estate(*_vms(40)),
        options=ImportOptions(dry_run=False),
        progress=progress,
    )
    assert report.applied
    assert log == ["read", "allocated during planning", "end", "write", "end"]


def test_a_change_between_plan_and_write_plans_again(db: Database) -> None:
    """A MAC of the export taken meanwhile: the write finds the plan stale, the import is
    planned again and refused for that NIC; nothing of the stale plan is written."""
    _prepare_estate(db)
    log: list[str] = []
    units = Units(db, log)

    def take(attempt: int) -> None:
        if attempt == 1:
            with db.session(write=True) as s:
                allocate_mac(
                    s,
                    Actor("api"),
                    scope="/dc1",
                    owner=Owner("vm", "intruder"),
                    interface="e",
                    mac=MacAddress(mac("02:00:00:00:00:02")),
                )

    units.before_write = take
    with pytest.raises(ImportRefused) as refused:
        _apply(units, _estate(*_vms(4)))
    assert [n.mac for _, n in refused.value.report.conflicts] == ["02:00:00:00:00:02"]
    assert log == ["read", "end", "write", "read", "end"]
    with db.session() as s:
        owners = s.scalars(select(Allocation.owner_name)).all()
    assert owners == ["intruder"]


def test_a_stale_plan_with_reassignment_gets_a_new_mac(db: Database) -> None:
    _prepare_estate(db)
    units = Units(db, [])

    def take(attempt: int) -> None:
        if attempt == 1:
            with db.session(write=True) as s:
                allocate_mac(
                    s,
                    Actor("api"),
                    scope="/dc1",
                    owner=Owner("vm", "intruder"),
                    interface="e",
                    mac=MacAddress(mac("02:00:00:00:00:01")),
                )

    units.before_write = take
    report = _apply(units, _estate(*_vms(3)), reassign_bad_macs=True)
    statuses = [(n.status.value, n.old_mac) for v in report.vms for n in v.nics if n.name == "nic1"]
    assert statuses == [("kept", None), ("reassigned", "02:00:00:00:00:01"), ("kept", None)]
    with db.session() as s:
        macs = s.scalars(select(Allocation.mac)).all()
    assert len(macs) == len(set(macs)) == 7  # 3 VMs x 2 NICs and the intruder


def test_plans_stale_every_time_are_made_in_the_lock(db: Database, steps: list[str]) -> None:
    _prepare_estate(db)
    with db.session(write=True) as s:
        create_pool(s, Actor("t"), name="edited", ranges=["0c:00:00:00:00:00-0c:00:00:00:00:0f"])
    steps.clear()
    units = Units(db, steps)

    def edit_a_range(attempt: int) -> None:  # bumps the topology generation
        with db.session(write=True) as s:
            edited = s.scalars(select(Pool).where(Pool.name == "edited")).one()
            mac = f"0c:00:00:00:01:{attempt:02x}"
            add_range(s, Actor("t"), edited.id, f"{mac}-{mac}")

    units.before_write = edit_a_range
    report = _apply(units, _estate(*_vms(3)))
    assert report.applied and report.totals()["kept"] == 3
    expected = ["read", "step", "end", "write"] * PLAN_ATTEMPTS + ["write", "step", "end"]
    assert _phases(steps) == expected
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 3 * 2


def test_allocations_from_the_same_pool_meanwhile_do_not_stale_the_import(
    db: Database, steps: list[str]
) -> None:
    _prepare_estate(db)
    steps.clear()
    units = Units(db, steps)

    def allocate_in_the_same_pool(attempt: int) -> None:  # a MAC the plan does not take
        with db.session(write=True) as s:
            allocate_mac(
                s,
                Actor("api"),
                scope="/dc1",
                owner=Owner("vm", f"api{attempt}"),
                interface="e",
                mac=MacAddress(mac(f"02:00:00:00:00:f{attempt}")),
            )

    units.before_write = allocate_in_the_same_pool
    report = _apply(units, _estate(*_vms(3, first=0x40)))
    assert report.applied and report.totals()["kept"] == 3
    assert _phases(steps) == ["read", "step", "end", "write", "end"]
    with db.session() as s:
        macs = s.scalars(select(Allocation.mac)).all()
    assert len(macs) == len(set(macs)) == 3 * 2 + 1


def test_a_first_import_plans_its_pools_and_scopes_before_the_write(
    db: Database, steps: list[str]
) -> None:
    """Pools and scopes to create are planned (not written) with the NICs; the short write
    creates them, then the allocations."""
    report = _apply(Units(db, steps), _estate(*_vms(2)))
    assert report.applied and report.totals()["pools_created"] == 1
    assert report.totals()["scopes_created"] == 2 and report.totals()["kept"] == 2
    assert _phases(steps) == ["read", "step", "end", "write", "end"]
    with db.session() as s:
        rows = s.execute(
            select(Allocation.mac, Scope.path, Pool.name)
            .join(Scope, Scope.id == Allocation.scope_id)
            .join(Pool, Pool.id == Allocation.pool_id)
        ).all()
        assert sorted((p, n) for _, p, n in rows) == [("/dc1/c1", "east")] * 4
        assert recount(s) == stored(s)
        assert s.scalars(select(Pool.held_count).where(Pool.name == "east")).one() == 4


def test_a_first_import_dry_run_writes_nothing(db: Database, steps: list[str]) -> None:
    with db.session() as s:
        before = counts(s)
    report = import_in_phases(
        Units(db, steps), Actor("importer"), _estate(*_vms(2)), options=ImportOptions()
    )
    assert report.totals()["pools_created"] == 1 and report.totals()["kept"] == 2
    assert "write" not in steps
    with db.session() as s:
        assert counts(s) == before


def test_a_pool_created_meanwhile_is_seen_by_the_next_plan(db: Database) -> None:
    """Between plan and write, someone creates a pool of the same name with other ranges:
    the write is stale, and the next plan refuses the import as mapping it in one go would."""
    log: list[str] = []
    units = Units(db, log)

    def create(attempt: int) -> None:
        if attempt == 1:
            with db.session(write=True) as s:
                create_pool(
                    s, Actor("t"), name="EAST", ranges=["0c:00:00:00:00:00-0c:00:00:00:00:ff"]
                )

    units.before_write = create
    with pytest.raises(NameInUse, match="a pool named 'EAST' already exists with other ranges"):
        _apply(units, _estate(*_vms(2)))
    assert log == ["read", "end", "write", "read"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 0
        assert s.scalars(select(Scope.path).where(Scope.path.like("/dc1%"))).all() == []


def test_pools_of_the_export_overlapping_each_other_are_mapped_in_the_lock(
    db: Database, steps: list[str]
) -> None:
    data = export(
        pools=[EAST, pool("p-west", "west", "02:00:00:00:00:80-02:00:00:00:01:ff")],
        data_centers=[dc("dc-1", "dc1", "p-east")],
        clusters=[cluster("c-1", "c1", dc_id="dc-1")],
        vms=_vms(1),
    )
    with pytest.raises(RangeOverlap, match="overlaps pool 'east'"):
        _apply(Units(db, steps), data)
    assert _phases(steps) == ["read", "end", "write"]


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("reassign", [False, True])
def test_phases_and_one_transaction_report_the_same(
    database: Database, reassign: bool, first: bool
) -> None:
    """The same mix of kept, new, in-use, outside-pool, existing and twin NICs, imported by
    ``import_in_phases`` and by ``run_import`` in one transaction: the same report."""
    from manager.services import bootstrap

    with database.session(write=True) as s:
        bootstrap(s, default_range=IMPORT_DEFAULT_RANGE)
    if not first:
        _prepare_estate(database)
    with database.session(write=True) as s:
        allocate_mac(
            s,
            Actor("api"),
            scope="/",
            owner=Owner("vm", "holder"),
            interface="e",
            mac=MacAddress(mac("02:00:00:00:00:05")),
        )
        if not first:
            allocate_mac(
                s,
                Actor("api"),
                scope="/dc1/c1",
                owner=Owner("ovirt-vm", "vm7", "v-7"),
                interface="nic1",
                mac=MacAddress(mac("02:00:00:00:00:70")),
            )
    data = _estate(
        *_vms(4),
        vm("v-5", "vm5", "02:00:00:00:00:05", cluster_id="c-1"),  # held elsewhere
        vm("v-6", "vm6", "0a:00:00:00:00:06", cluster_id="c-1"),  # outside the pool
        vm("v-7", "vm7", "02:00:00:00:00:07", cluster_id="c-1"),  # holds another MAC already
        vm("v-8", "twin", None, cluster_id="c-1"),
        vm("v-9", "twin", "02:00:00:00:00:09", cluster_id="c-1"),
        vm("v-10", "vm10", "02:00:00:00:00:01", cluster_id="c-1"),  # duplicate in the export
    )
    options = ImportOptions(reassign_bad_macs=reassign)
    phased = import_in_phases(Units(database, []), Actor("t"), data, options=options)
    with database.session(write=True) as s:
        single = run_import(s, Actor("t"), data, options=options)
    assert phased.to_dict() == single.to_dict()
    assert phased.refused


# --- property: the phases report what one transaction reports ----------------------------

_MAC = st.one_of(
    st.none(),
    st.sampled_from(
        ["02:00:00:00:00:0" + str(i) for i in range(6)] + ["0a:00:00:00:00:01", "0c:00:00:00:00:01"]
    ),
)
_VM = st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.lists(_MAC, min_size=1, max_size=3))
_HELD = st.lists(
    st.tuples(st.sampled_from(["/", "/dc1", "/dc1/c1"]), st.sampled_from(["x", "a", "b"]), _MAC),
    max_size=5,
)


@pytest.fixture(scope="module")
def prop_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    from manager.db import Base

    path = tmp_path_factory.mktemp("phases") / "macpool.db"
    database = Database(f"sqlite:///{path}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def _empty(database: Database) -> None:
    from sqlalchemy import delete, update

    from manager.db import AuditEvent, HeldMac, PoolChange, PoolRange
    from manager.services import bootstrap
    from manager.services.index_cache import forget

    with database.session(write=True) as s:
        for model in (Allocation, HeldMac, AuditEvent, PoolChange):
            s.execute(delete(model))
        s.execute(update(Scope).values(pool_id=None))
        paths = s.scalars(select(Scope.path).order_by(func.length(Scope.path).desc())).all()
        for path in paths:  # children first
            s.execute(delete(Scope).where(Scope.path == path))
        s.execute(delete(PoolRange))
        s.execute(delete(Pool))
    with database.session(write=True) as s:
        forget(s)
        bootstrap(s, default_range=IMPORT_DEFAULT_RANGE)


def _held_before(database: Database, held: list[tuple[str, str, str | None]], first: bool) -> None:
    """An empty database (with the export's estate unless ``first``) and these allocations."""
    from manager.core.errors import MacPoolError

    _empty(database)
    if not first:
        _prepare_estate(database)
    for scope, owner, wanted in held:
        try:
            with database.session(write=True) as s:
                allocate_mac(
                    s,
                    Actor("api"),
                    scope=scope,
                    owner=Owner("ovirt-vm" if scope == "/dc1/c1" else "vm", owner, f"v-{owner}"),
                    interface="nic1",
                    mac=None if wanted is None else MacAddress(mac(wanted)),
                )
        except MacPoolError:
            pass  # a scope of the estate that is not there yet, a MAC taken: no allocation


def _export_of(vms: list[tuple[str, list[str | None]]]) -> OvirtExport:
    """The estate with these VMs (name, NIC MACs) in cluster c1."""
    return _estate(
        *(vm(f"v-{i}", name, *macs, cluster_id="c-1") for i, (name, macs) in enumerate(vms))
    )


@settings(max_examples=30)
@given(
    vms=st.lists(_VM, min_size=1, max_size=5),
    held=_HELD,
    first=st.booleans(),
    reassign=st.booleans(),
)
def test_phases_report_what_one_transaction_reports(
    prop_db: Database,
    vms: list[tuple[str, list[str | None]]],
    held: list[tuple[str, str, str | None]],
    first: bool,
    reassign: bool,
) -> None:
    _held_before(prop_db, held, first)
    data = _export_of(vms)
    options = ImportOptions(reassign_bad_macs=reassign)
    phased = import_in_phases(Units(prop_db, []), Actor("t"), data, options=options)
    with prop_db.session(write=True) as s:
        single = run_import(s, Actor("t"), data, options=options)
    assert phased.to_dict() == single.to_dict()


def _outcome(database: Database, data: OvirtExport, apply: Callable[[], ImportReport]) -> object:
    """The report of an apply (or of its refusal) and every allocation after it."""
    try:
        report = apply()
    except ImportRefused as refused:
        report = refused.report
    with database.session() as s:
        rows = s.execute(
            select(
                Allocation.owner_name,
                Allocation.interface,
                Allocation.mac,
                Allocation.state,
                Allocation.expires_at,
            ).order_by(Allocation.owner_name, Allocation.interface)
        ).all()
        assert stored(s) == recount(s)
    return report.to_dict(), [tuple(r) for r in rows]


@settings(max_examples=30)
@given(
    vms=st.lists(_VM, min_size=2, max_size=6),
    held=_HELD,
    first=st.booleans(),
    reassign=st.booleans(),
)
def test_an_import_written_in_chunks_ends_as_one_transaction_would(
    prop_db: Database,
    vms: list[tuple[str, list[str | None]]],
    held: list[tuple[str, str, str | None]],
    first: bool,
    reassign: bool,
) -> None:
    """Same report, same allocations (none left pending), or the same refusal with nothing
    of the import left: chunks of 2 VMs against one transaction."""
    data = _export_of(vms)
    options = ImportOptions(dry_run=False, reassign_bad_macs=reassign)
    _held_before(prop_db, held, first)

    def chunked() -> ImportReport:
        return import_in_phases(Units(prop_db, []), Actor("t"), data, options=options, chunk_vms=2)

    def single() -> ImportReport:
        with prop_db.session(write=True) as s:
            return run_import(s, Actor("t"), data, options=options)

    in_chunks = _outcome(prop_db, data, chunked)
    _held_before(prop_db, held, first)
    assert in_chunks == _outcome(prop_db, data, single)


# --- A larger import, written in chunks (staged, then confirmed at once) ---------------------


def _chunked(
    units: Units, data: OvirtExport, *, chunk_vms: int = 3, **options: Any
) -> ImportReport:
    return import_in_phases(
        units,
        Actor("importer"),
        data,
        options=ImportOptions(**{"dry_run": False, **options}),
        chunk_vms=chunk_vms,
    )


def _states(db: Database) -> dict[str, tuple[str, bool]]:
    """Owner name → (state, whether it expires) of every allocation."""
    with db.session() as s:
        rows = s.execute(
            select(Allocation.owner_name, Allocation.state, Allocation.expires_at)
        ).all()
    return {name: (state, expires is not None) for name, state, expires in rows}


def test_a_larger_import_is_written_in_chunks_then_made_lasting_at_once(db: Database) -> None:
    """7 VMs in chunks of 3: three short write units (other writers get the lock between
    them), then one that confirms; the result is the one-transaction import's."""
    _prepare_estate(db)
    with db.session(write=True) as s:
        other = create_pool(
            s, Actor("t"), name="other", ranges=["0c:00:00:00:00:00-0c:00:00:00:ff:ff"]
        )
        create_scope(s, Actor("t"), kind="datacenter", name="other", pool_id=other.id)
    log: list[str] = []
    units = Units(db, log)
    between: list[str] = []

    def meanwhile(write: int) -> None:
        if write in (2, 3, 4):  # after chunk 1, 2, 3: an API allocation gets in
            with db.session(write=True) as s:
                allocate_mac(
                    s,
                    Actor("api"),
                    scope="/other",
                    owner=Owner("vm", f"api-{write}"),
                    interface="e",
                )
            between.append(f"api-{write}")

    units.before_write = meanwhile
    written: list[tuple[int, int]] = []
    report = import_in_phases(
        units,
        Actor("importer"),
        _estate(*_vms(7)),
        options=ImportOptions(dry_run=False),
        writing=lambda done, total: written.append((done, total)),
        chunk_vms=3,
    )
    assert report.applied and report.totals()["kept"] == 7 and report.totals()["vms"] == 7
    # The whole plan, then per chunk a plan and a write, then the confirmation.
    assert log == ["read", "end"] + ["read", "end", "write", "end"] * 3 + ["write", "end"]
    assert written == [(6, 14), (12, 14), (14, 14)]
    assert between == ["api-2", "api-3", "api-4"]
    states = _states(db)
    assert set(states.values()) == {("allocated", False)}, "nothing stays pending"
    assert len(states) == 7 + 3
    with db.session() as s:
        assert stored(s) == recount(s)
        event = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "import.ovirt")
            .order_by(AuditEvent.id.desc())
        ).first()
    assert event is not None
    assert event.details["chunks"] == 3 and event.details["confirmed"] == 14
    # Re-importing changes nothing, in chunks too.
    again = _chunked(Units(db, []), _estate(*_vms(7)))
    assert again.totals()["unchanged"] == 14


def test_a_mac_taken_between_chunks_refuses_the_import_and_undoes_the_chunks_written(
    db: Database,
) -> None:
    _prepare_estate(db)
    units = Units(db, [])

    def take(write: int) -> None:
        if write == 2:  # chunk 1 is written; vm4 (chunk 2) asks for 02:..:04
            with db.session(write=True) as s:
                allocate_mac(
                    s,
                    Actor("api"),
                    scope="/dc1",
                    owner=Owner("vm", "intruder"),
                    interface="e",
                    mac=MacAddress(mac("02:00:00:00:00:04")),
                )

    units.before_write = take
    with pytest.raises(ImportRefused) as refused:
        _chunked(units, _estate(*_vms(7)))
    assert [n.mac for _, n in refused.value.report.conflicts] == ["02:00:00:00:00:04"]
    assert _states(db) == {"intruder": ("allocated", False)}, "chunk 1 was undone"
    with db.session() as s:
        assert stored(s) == recount(s)
        undone = s.scalars(
            select(func.count()).where(AuditEvent.action == "allocation.undone")
        ).one()
    assert undone == 6  # chunk 1: 3 VMs x 2 NICs


def test_an_importer_that_dies_leaves_staged_rows_that_expire_or_a_rerun_confirms(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kill -9`` after chunk 1: its rows are pending and expire; unless the import is run
    again first, which finds them unchanged and makes them lasting with its own."""
    _prepare_estate(db)
    units = Units(db, [])

    class Killed(BaseException):
        pass

    def die(write: int) -> None:
        if write == 2:
            raise Killed

    units.before_write = die
    monkeypatch.setattr(importer_module, "_undo", lambda *args: None)  # nobody left to undo
    with pytest.raises(Killed):
        _chunked(units, _estate(*_vms(7)))
    states = _states(db)
    assert states == {f"vm{i}": ("pending", True) for i in range(3)}
    with db.session() as s, pytest.raises(MacInUse):  # they hold their MACs meanwhile
        allocate_mac(
            s,
            Actor("api"),
            scope="/dc1",
            owner=Owner("vm", "x"),
            interface="e",
            mac=MacAddress(mac("02:00:00:00:00:01")),
        )
    with db.session() as s:  # left alone, they expire (in the sweeper's batches)
        assert (
            expire_pending(s, Actor("t"), now=datetime.now(UTC) + timedelta(hours=2), limit=4) == 4
        )
        s.rollback()
    again = _chunked(Units(db, []), _estate(*_vms(7)))
    assert (again.totals()["unchanged"], again.totals()["kept"], again.totals()["new"]) == (6, 4, 4)
    assert set(_states(db).values()) == {("allocated", False)}
    with db.session(write=True) as s:
        assert expire_pending(s, Actor("t"), now=datetime.now(UTC) + timedelta(hours=2)) == 0
