"""AllocationPlan (group commit's allocations) and index undo before a rollback.

The plan must store exactly what ``allocate_mac`` called once per request stores (rows, audit
events with pool warnings, pool counters and cursor), and a plan or an allocation that is rolled
back must leave this process's index as the database has it, without a reload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from manager.core.actor import Owner
from manager.core.errors import PoolExhausted
from manager.core.index import HeldIndex
from manager.db import Allocation, AuditEvent, Base, Database, HeldMac, Pool, PoolChange, Scope
from manager.services import allocate_mac, bootstrap, create_pool, create_scope
from manager.services.allocation_rows import AllocationRequest
from manager.services.bulk_allocations import AllocationPlan
from manager.services.index_cache import _cache_for, forget, pool_index
from tests.conftest import ACTOR, DEFAULT_RANGE

SMALL = "0a:00:00:00:00:00-0a:00:00:00:00:0b"  # 12 MACs: low (≤ 10 left) and exhausted warnings
OWNERS = [("vm", f"vm-{i}", f"nic{j}") for i in range(6) for j in range(2)]


def _setup(database: Database) -> None:
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        pool = create_pool(s, ACTOR, name="Small", ranges=[SMALL])
        create_scope(s, ACTOR, kind="datacenter", name="dc", pool_id=pool.id)


def _reset(database: Database) -> None:
    """An empty database again (ids start over), as if a second one."""
    with database.session() as s:
        forget(s)
    if database.is_sqlite:
        database.dispose()
        path = Path(str(database.url.database))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        with database.engine.begin() as conn:
            Base.metadata.drop_all(conn)
    Base.metadata.create_all(database.engine)
    _setup(database)


def _target(s: Session) -> tuple[Scope, int]:
    scope = s.scalars(select(Scope).where(Scope.path == "/dc")).one()
    assert scope.pool_id is not None
    return scope, scope.pool_id


def _snapshot(database: Database) -> dict[str, Any]:
    """What both ways of allocating must store alike (ids and order included)."""
    with database.session() as s:
        allocations = [
            (a.id, a.mac, a.pool_id, a.scope_id, a.owner_kind, a.owner_name, a.interface, a.state,
             a.in_range, a.transaction, a.created_by, a.expires_at is not None)
            for a in s.scalars(select(Allocation).order_by(Allocation.id))
        ]  # fmt: skip
        events = [
            (e.action, e.target_type, e.target_id, e.target, e.severity, e.actor, e.details)
            for e in s.scalars(
                select(AuditEvent).where(AuditEvent.action != "pool.create").order_by(AuditEvent.id)
            )
            if e.target != "Default" and not e.action.startswith("scope.")
        ]
        pool = s.scalars(select(Pool).where(Pool.name == "Small")).one()
        changes = [
            (c.revision, c.mac, c.held)
            for c in s.scalars(
                select(PoolChange)
                .where(PoolChange.pool_id == pool.id)
                .order_by(PoolChange.revision)
            )
        ]
        return {
            "allocations": allocations,
            "events": events,
            "pool": (pool.cursor, pool.held_count, pool.revision, pool.low_warned),
            "changes": changes,
            "held": sorted(s.scalars(select(HeldMac.mac))),
        }


def _one_by_one(database: Database) -> list[int]:
    macs = []
    with database.session(write=True) as s:
        scope, _ = _target(s)
        for kind, name, interface in OWNERS:
            result = allocate_mac(
                s, ACTOR, scope=scope, owner=Owner(kind, name), interface=interface,
                ttl_seconds=300, transaction="t1",
            )  # fmt: skip
            macs.append(result.allocation.mac)
    return macs


def _planned(database: Database, *, per_call: int = 3) -> list[int]:
    macs: list[int] = []
    with database.session(write=True) as s:
        plan = AllocationPlan(s, ACTOR)
        target = _target(s)
        for start in range(0, len(OWNERS), per_call):
            requests = [
                AllocationRequest(
                    target[0], Owner(kind, name), interface, ttl_seconds=300, transaction="t1"
                )
                for kind, name, interface in OWNERS[start : start + per_call]
            ]
            macs += plan.allocate(requests, [target] * len(requests), unheld=True)
            assert len(plan) == len(macs)
        plan.write()
        assert len(plan) == 0
    return macs


def test_a_plan_stores_what_allocating_one_by_one_stores(database: Database) -> None:
    _setup(database)
    one_by_one = _one_by_one(database)
    expected = _snapshot(database)
    _reset(database)
    planned = _planned(database)
    assert planned == one_by_one
    assert len(set(planned)) == len(OWNERS)
    assert _snapshot(database) == expected
    actions = [event[0] for event in expected["events"]]
    assert "pool.low" in actions and "pool.exhausted" in actions  # warnings are compared too


def test_a_plan_refuses_like_the_service_when_the_pool_runs_out(database: Database) -> None:
    _setup(database)
    with database.session(write=True) as s:
        plan = AllocationPlan(s, ACTOR)
        target = _target(s)
        requests = [AllocationRequest(target[0], Owner("vm", f"v{i}"), "nic0") for i in range(13)]
        with pytest.raises(PoolExhausted, match="Pool 'Small' has no free MAC"):
            plan.allocate(requests, [target] * 13, unheld=True)
        plan.undo()
        s.rollback()
    assert _snapshot(database)["held"] == []


def test_planned_identities_count_as_held(database: Database) -> None:
    """A repeat of an owner identity planned earlier gets the planned MAC (idempotent)."""
    _setup(database)
    with database.session(write=True) as s:
        plan = AllocationPlan(s, ACTOR)
        target = _target(s)
        request = AllocationRequest(target[0], Owner("vm", "a"), "nic0")
        [first] = plan.allocate([request], [target], unheld=True)
        assert plan.holds(target[0].id, "vm", "a") and not plan.holds(target[0].id, "vm", "b")
        [again] = plan.allocate([request], [target], unheld=True)
        assert again == first
        plan.write()
    assert _snapshot(database)["held"] == [first]


def _index_matches_database(database: Database, s: Session) -> None:
    pool = s.scalars(select(Pool).where(Pool.name == "Small")).one()
    s.refresh(pool)
    _, index = pool_index(s, pool)
    stored = s.scalars(
        select(HeldMac.mac).where(HeldMac.mac.between(0x0A0000000000, 0x0A000000000B))
    )
    assert index.intervals() == HeldIndex.from_sorted(sorted(stored)).intervals()


Undo = Callable[[Database], None]


def _plan_three(database: Database, *, written: bool) -> None:
    """Plan three MACs (and write them, or not), then roll the transaction back."""
    with database.session(write=True) as s:
        plan = AllocationPlan(s, ACTOR)
        target = _target(s)
        requests = [AllocationRequest(target[0], Owner("vm", f"x{i}"), "nic0") for i in range(3)]
        plan.allocate(requests, [target] * 3, unheld=True)
        if written:
            plan.write()  # the rollback reverts the index advances
        else:
            plan.undo()
        s.rollback()


def _undo_plan(database: Database) -> None:
    _plan_three(database, written=False)


def _undo_written_plan(database: Database) -> None:
    _plan_three(database, written=True)


def _undo_allocation(database: Database) -> None:
    with database.session(write=True) as s:
        for i in range(3):
            allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", f"x{i}"), interface="nic0")
        s.rollback()


def _undo_by_error(database: Database) -> None:
    """A unit of work that raises is rolled back by Database.session: the same undo."""
    with pytest.raises(RuntimeError), database.session(write=True) as s:
        for i in range(3):
            allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", f"x{i}"), interface="nic0")
        raise RuntimeError("refused after allocating")


@pytest.mark.parametrize("undo", [_undo_plan, _undo_written_plan, _undo_allocation, _undo_by_error])
def test_rolled_back_macs_leave_the_index_without_a_reload(database: Database, undo: Undo) -> None:
    _setup(database)
    with database.session(write=True) as s:
        first = allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", "kept"), interface="nic0")
        first_mac = first.allocation.mac
    with database.session(write=True) as s:  # the write sessions' cache
        pool_id = s.scalars(select(Pool.id).where(Pool.name == "Small")).one()
        entry = _cache_for(s)[pool_id]
    undo(database)
    with database.session(write=True) as s:
        _index_matches_database(database, s)
        # The same entry as before, moved back: not dropped or reloaded from the database.
        assert _cache_for(s)[pool_id] is entry
        again = allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", "next"), interface="nic0")
        # Nothing was burned: the next MAC follows the one kept.
        assert again.allocation.mac == first_mac + 1


def test_a_committed_allocation_is_not_undone_by_a_later_rollback(database: Database) -> None:
    _setup(database)
    with database.session(write=True) as s:
        kept = allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", "kept"), interface="nic0")
        kept_mac = kept.allocation.mac
        s.commit()
        s.execute(text("SELECT 1"))
        s.rollback()  # nothing of the committed transaction is left to undo
    with database.session(write=True) as s:
        _index_matches_database(database, s)
        after = allocate_mac(s, ACTOR, scope="/dc", owner=Owner("vm", "b"), interface="nic0")
        assert after.allocation.mac == kept_mac + 1
