"""Forecasts: the kernel's plan made in a read transaction, written later in a short one.

- property (hypothesis, SQLite): over random stored allocations and random batches, the
  forecast is exactly what its write stores, and what ``allocate_macs`` does with the batch;
- a change between plan and write (a MAC taken or released, an owner identity created, a pool
  advanced, a range edited, a holder gone) is detected: ``StalePlan``, nothing written, never a
  duplicate; a change elsewhere is not; the database constraints remain the last guard
  (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from manager.core.actor import Owner
from manager.core.errors import MacPoolError
from manager.core.mac import MacAddress
from manager.core.ranges import MacRange
from manager.db import (
    Allocation,
    AuditEvent,
    Base,
    Database,
    HeldMac,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
)
from manager.services import (
    AllocationRequest,
    Forecast,
    StalePlan,
    add_range,
    allocate_mac,
    bootstrap,
    create_pool,
    create_scope,
    read_snapshot,
    release_allocation,
)
from manager.services import forecast as forecast_module
from manager.services.bulk_allocations import allocate_macs
from manager.services.index_cache import forget
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.services.recount import recount, stored

#: Two small pools (8 MACs each, so batches run out), one allowing duplicates.
BLOCKS = {"dup": 0x0A0000000000, "strict": 0x0E0000000000}
OUTSIDE = [0x120000000001, 0x120000000002]
MACS = [base + i for base in BLOCKS.values() for i in range(10)] + OUTSIDE


def _reset(db: Database) -> None:
    with db.session(write=True) as s:
        for model in (Allocation, HeldMac, AuditEvent, PoolChange):
            s.execute(delete(model))
        s.execute(update(Scope).values(pool_id=None))
        s.execute(delete(Scope).where(Scope.parent_id.is_not(None)))
        s.execute(delete(Scope))
        s.execute(delete(PoolRange))
        s.execute(delete(Pool))
    with db.session(write=True) as s:
        forget(s)
        bootstrap(s, default_range=DEFAULT_RANGE)
        for name, base in BLOCKS.items():
            pool = create_pool(
                s,
                ACTOR,
                name=name,
                ranges=[str(MacRange(base, base + 7))],
                allow_duplicates=name == "dup",
            )
            create_scope(s, ACTOR, kind="datacenter", name=name, pool_id=pool.id)


def _state(session: Session) -> dict[str, Any]:
    """What a batch changes: allocations by identity, held MACs, the pools' counters."""
    rows = session.execute(
        select(
            Scope.path,
            Allocation.owner_name,
            Allocation.interface,
            Allocation.mac,
            Allocation.pool_id,
            Allocation.in_range,
        ).join(Scope, Scope.id == Allocation.scope_id)
    ).all()
    pools = session.execute(
        select(Pool.name, Pool.held_count, Pool.cursor, Pool.external_count, Pool.duplicate_count)
    ).all()
    return {
        "allocations": sorted(tuple(r) for r in rows),
        "held": sorted(session.scalars(select(HeldMac.mac))),
        "pools": sorted(tuple(p) for p in pools),
    }


_db: list[Database] = []


@pytest.fixture(scope="module")
def prop_dbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Database]]:
    path: Path = tmp_path_factory.mktemp("forecast") / "macpool.db"
    first = Database(f"sqlite:///{path}")
    Base.metadata.create_all(first.engine)
    # A second Database on the same file: a process of its own, for the kernel's run.
    dbs = [first, Database(f"sqlite:///{path}")]
    yield dbs
    for db in dbs:
        with db.session() as s:
            forget(s)
        db.dispose()


REQUEST = st.tuples(
    st.sampled_from(["/dup", "/strict"]),
    st.sampled_from([f"vm{i}" for i in range(6)]),
    st.sampled_from(["nic0", "nic1"]),
    st.one_of(st.none(), st.sampled_from(MACS)),
)
STORED = st.lists(REQUEST, max_size=8)
BATCH = st.lists(REQUEST, min_size=1, max_size=12)


def _requests(batch: list[tuple[str, str, str, int | None]]) -> list[AllocationRequest]:
    return [
        AllocationRequest(
            scope, Owner("vm", owner, f"uid-{owner}"), nic, None if m is None else MacAddress(m)
        )
        for scope, owner, nic, m in batch
    ]


@settings(max_examples=40)
@given(stored_rows=STORED, batch=BATCH, in_range_only=st.booleans())
def test_forecast_is_what_its_write_stores_and_what_the_kernel_does(
    prop_dbs: list[Database],
    stored_rows: list[tuple[str, str, str, int | None]],
    batch: list[tuple[str, str, str, int | None]],
    in_range_only: bool,
) -> None:
    db, kernel_db = prop_dbs
    _reset(db)
    for request in _requests(stored_rows):
        try:
            with db.session(write=True) as s:
                allocate_mac(
                    s,
                    ACTOR,
                    scope=request.scope,
                    owner=request.owner,
                    interface=request.interface,
                    mac=request.mac,
                )
        except MacPoolError:
            pass
    requests = _requests(batch)
    with db.session() as s:
        before = _state(s)
    with db.session() as s:
        forecast = Forecast(s, ACTOR, in_range_only=in_range_only)
        planned = forecast.plan(requests)
    refused = [p for p in planned if p.error is not None]

    # The kernel itself, on the same state, in a transaction rolled back afterwards.
    if not in_range_only:
        session = kernel_db.new_session(write=True)
        try:
            if refused:
                with pytest.raises(MacPoolError):
                    allocate_macs(session, ACTOR, requests)
            else:
                results = allocate_macs(session, ACTOR, requests)
                assert [r.allocation.mac for r in results] == [p.mac for p in planned]
                assert [r.created for r in results] == [p.created for p in planned]
        finally:
            session.rollback()
            session.close()
            with kernel_db.session() as s:
                forget(s)

    with db.session(write=True) as s:
        forecast.write(s)
    with db.session() as s:
        after = _state(s)
        assert recount(s) == stored(s)
        new = set(after["allocations"]) - set(before["allocations"])
        assert set(before["allocations"]) <= set(after["allocations"])
        wanted = {
            (r.scope, r.owner.name, r.interface, p.mac)
            for r, p in zip(requests, planned, strict=True)
            if p.created
        }
        assert {row[:4] for row in new} == wanted
        assert len(new) == sum(p.created for p in planned)
        for p in planned:
            if p.error is None and not p.created:  # an idempotent repeat: the holder's MAC
                assert p.prior is not None and p.mac == p.prior.mac
        # Each MAC held once, every allocation's MAC held.
        assert set(after["held"]) == {row[3] for row in after["allocations"]}
        if in_range_only:
            assert all(row[5] for row in new)


# --- a change between plan and write ------------------------------------------------------


def _plan(database: Database, *requests: AllocationRequest) -> Forecast:
    with database.session() as s:
        read_snapshot(s)
        forecast = Forecast(s, ACTOR)
        planned = forecast.plan(list(requests))
    assert all(p.error is None for p in planned), planned
    return forecast


def _count(database: Database, model: Any = Allocation) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def pools(database: Database) -> Database:
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
    with database.session(write=True) as s:
        for name, base in BLOCKS.items():
            pool = create_pool(
                s,
                ACTOR,
                name=name,
                ranges=[str(MacRange(base, base + 7))],
                allow_duplicates=name == "dup",
            )
            create_scope(s, ACTOR, kind="datacenter", name=name, pool_id=pool.id)
    return database


def _allocate(database: Database, scope: str, owner: str, mac: int | None = None) -> int:
    with database.session(write=True) as s:
        return allocate_mac(
            s,
            ACTOR,
            scope=scope,
            owner=Owner("vm", owner),
            interface="nic0",
            mac=None if mac is None else MacAddress(mac),
        ).allocation.id


def _write_stale(database: Database, forecast: Forecast) -> None:
    before = _count(database)
    with pytest.raises(StalePlan), database.session(write=True) as s:
        forecast.write(s)
    assert _count(database) == before


def _no_duplicates(database: Database) -> None:
    with database.session() as s:
        macs = s.scalars(
            select(Allocation.mac)
            .join(Pool, Pool.id == Allocation.pool_id)
            .where(Pool.allow_duplicates.is_(False))
        ).all()
        assert len(macs) == len(set(macs))
        assert recount(s) == stored(s)


def test_a_free_mac_taken_meanwhile_is_stale(pools: Database) -> None:
    mac = BLOCKS["strict"] + 3
    forecast = _plan(pools, AllocationRequest("/strict", Owner("vm", "a"), "nic0", MacAddress(mac)))
    _allocate(pools, "/strict", "b", mac)
    _write_stale(pools, forecast)
    _no_duplicates(pools)


def test_an_automatic_mac_taken_meanwhile_is_stale(pools: Database) -> None:
    forecast = _plan(pools, AllocationRequest("/strict", Owner("vm", "a"), "nic0"))
    _allocate(pools, "/strict", "b")  # the same first free MAC
    _write_stale(pools, forecast)
    _no_duplicates(pools)


def test_an_identity_created_meanwhile_is_stale(pools: Database) -> None:
    forecast = _plan(pools, AllocationRequest("/dup", Owner("vm", "a"), "nic0"))
    _allocate(pools, "/dup", "a", BLOCKS["dup"] + 5)
    _write_stale(pools, forecast)
    with pools.session() as s:
        assert s.scalars(select(Allocation.mac).where(Allocation.owner_name == "a")).all() == [
            BLOCKS["dup"] + 5
        ]


def test_a_released_mac_is_stale(pools: Database) -> None:
    mac = BLOCKS["dup"] + 2
    holder = _allocate(pools, "/dup", "holder", mac)
    forecast = _plan(pools, AllocationRequest("/dup", Owner("vm", "a"), "nic0", MacAddress(mac)))
    assert forecast.planned[0].created  # shared: the pool allows duplicates
    with pools.session(write=True) as s:
        release_allocation(s, ACTOR, holder)
    _write_stale(pools, forecast)  # the MAC is no longer held: sharing it would be wrong


def test_a_range_edit_is_stale(pools: Database) -> None:
    forecast = _plan(pools, AllocationRequest("/dup", Owner("vm", "a"), "nic0"))
    with pools.session(write=True) as s:
        pool = s.scalars(select(Pool).where(Pool.name == "dup")).one()
        add_range(s, ACTOR, pool.id, str(MacRange(BLOCKS["dup"] + 8, BLOCKS["dup"] + 9)))
    _write_stale(pools, forecast)


def test_changes_elsewhere_do_not_stale_the_plan(pools: Database) -> None:
    forecast = _plan(
        pools,
        AllocationRequest("/strict", Owner("vm", "a"), "nic0"),
        AllocationRequest("/strict", Owner("vm", "b"), "nic0", MacAddress(BLOCKS["strict"] + 6)),
    )
    _allocate(pools, "/dup", "elsewhere")
    _allocate(pools, "/", "default-pool")
    with pools.session(write=True) as s:
        forecast.write(s)
    with pools.session() as s:
        rows = s.execute(
            select(Allocation.owner_name, Allocation.mac).order_by(Allocation.owner_name)
        ).all()
    assert [tuple(r) for r in rows if r[0] in ("a", "b")] == [
        ("a", BLOCKS["strict"]),
        ("b", BLOCKS["strict"] + 6),
    ]
    _no_duplicates(pools)


def test_the_constraints_remain_the_last_guard(
    pools: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with the checks skipped, a MAC taken meanwhile is never written twice."""
    mac = BLOCKS["strict"] + 4
    forecast = _plan(pools, AllocationRequest("/strict", Owner("vm", "a"), "nic9", MacAddress(mac)))
    _allocate(pools, "/strict", "b", mac)
    monkeypatch.setattr(forecast_module.Forecast, "_verify", lambda *args: None)
    _write_stale(pools, forecast)
    _no_duplicates(pools)


def test_a_stale_plan_planned_again_is_written(pools: Database) -> None:
    request = AllocationRequest("/strict", Owner("vm", "a"), "nic0")
    forecast = _plan(pools, request)
    taken = _allocate(pools, "/strict", "b")
    _write_stale(pools, forecast)
    again = _plan(pools, request)
    with pools.session(write=True) as s:
        again.write(s)
    with pools.session() as s:
        macs = {row.id: row.mac for row in s.execute(select(Allocation.id, Allocation.mac))}
    assert again.planned[0].mac != macs[taken]
    _no_duplicates(pools)


def test_refusals_are_per_request_and_a_retry_plans_automatically(pools: Database) -> None:
    held = BLOCKS["strict"] + 1
    _allocate(pools, "/strict", "holder", held)
    requests = [
        AllocationRequest("/strict", Owner("vm", "a"), "nic0", MacAddress(held)),
        AllocationRequest("/strict", Owner("vm", "b"), "nic0", MacAddress(OUTSIDE[0])),
        AllocationRequest("/strict", Owner("vm", "c"), "nic0", MacAddress(BLOCKS["strict"] + 5)),
    ]
    with pools.session() as s:
        forecast = Forecast(s, ACTOR, in_range_only=True)
        planned = forecast.plan(requests, retry=lambda i, _error: i == 0)
    assert planned[0].retried and planned[0].created and planned[0].mac == BLOCKS["strict"]
    assert type(planned[0].error).__name__ == "MacInUse"
    assert type(planned[1].error).__name__ == "OutsidePool" and not planned[1].created
    assert planned[2].created and planned[2].mac == BLOCKS["strict"] + 5
    with pools.session(write=True) as s:
        forecast.write(s)
    with pools.session() as s:
        owners = s.scalars(select(Allocation.owner_name).order_by(Allocation.owner_name)).all()
    assert owners == ["a", "c", "holder"]


def test_allocations_from_the_same_pool_meanwhile_keep_the_plan(pools: Database) -> None:
    """Others allocating other MACs from the pool do not stale the plan: it is written on top."""
    forecast = _plan(
        pools,
        AllocationRequest("/", Owner("vm", "a"), "nic0"),
        AllocationRequest("/", Owner("vm", "b"), "nic0", MacAddress(0x020000000100)),
    )
    planned = [p.mac for p in forecast.planned]
    _allocate(pools, "/", "meanwhile", 0x020000000200)
    with pools.session() as s:
        revision = s.scalars(select(Pool.revision).where(Pool.is_default.is_(True))).one()
    with pools.session(write=True) as s:
        forecast.write(s)
    with pools.session() as s:
        rows = {
            r.owner_name: r.mac for r in s.execute(select(Allocation.owner_name, Allocation.mac))
        }
        pool = s.scalars(select(Pool).where(Pool.is_default.is_(True))).one()
        assert pool.held_count == 3 and pool.revision == revision + 2
        changes = s.scalars(
            select(PoolChange.mac)
            .where(PoolChange.pool_id == pool.id)
            .order_by(PoolChange.revision)
        ).all()
    assert rows == {"a": planned[0], "b": 0x020000000100, "meanwhile": 0x020000000200}
    # The pool's change history: the allocation meanwhile, then the plan's two MACs on top.
    assert changes[-3] == 0x020000000200
    assert sorted(changes[-2:]) == sorted([planned[0], 0x020000000100])
    _no_duplicates(pools)
    # The process's index of the pool follows: the next allocation takes none of these MACs.
    taken = _allocate(pools, "/", "next")
    with pools.session() as s:
        assert s.get(Allocation, taken).mac not in rows.values()


def test_a_warning_due_after_allocations_meanwhile_is_stale(pools: Database) -> None:
    forecast = _plan(
        pools,
        AllocationRequest("/strict", Owner("vm", "a"), "nic0", MacAddress(BLOCKS["strict"] + 7)),
    )
    _allocate(pools, "/strict", "meanwhile", BLOCKS["strict"] + 1)
    _write_stale(pools, forecast)  # 8 MACs: at or below the low threshold, a warning may be due


def test_a_plan_reads_one_snapshot(pools: Database) -> None:
    """A commit made while the plan reads is not seen by it (PostgreSQL: REPEATABLE READ)."""
    with pools.session() as s:
        read_snapshot(s)
        forecast = Forecast(s, ACTOR)
        _allocate(pools, "/strict", "meanwhile", BLOCKS["strict"])
        planned = forecast.plan([AllocationRequest("/strict", Owner("vm", "a"), "nic0")])
    assert planned[0].mac == BLOCKS["strict"]  # free in the snapshot the plan began with
    _write_stale(pools, forecast)
