"""MACs reserved ahead (manager.services.reservations) and the topology generation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import MacInUse
from manager.core.mac import format_mac_int
from manager.db import Allocation, Database, HeldMac
from manager.db.generation import current as generation
from manager.services import (
    add_range,
    allocate_mac,
    assign_pool,
    create_pool,
    create_scope,
    delete_scope,
    reservations,
    update_pool,
)
from manager.services.reservations import (
    RESERVATION_KIND,
    Answer,
    Reserved,
    Target,
    expire_reservations,
    owner_snapshot,
    record_answers,
    release_reservations,
    reserve_macs,
    resolve_target,
)
from tests.services.recount import recount, stored

HOLDER = "host:1:abcd"


@pytest.fixture
def target(session: Session, actor: Actor, database: Database) -> Target:
    create_scope(session, actor, kind="cluster", name="k8s")
    create_scope(session, actor, kind="namespace", name="ns", parent="/k8s")
    session.commit()
    found = resolve_target(database, "/k8s/ns")
    assert found is not None
    return found


def _reserve(session: Session, actor: Actor, target: Target, count: int = 4) -> list[Reserved]:
    return reserve_macs(
        session,
        actor,
        target=target,
        holder=HOLDER,
        first=0,
        count=count,
        ttl_seconds=60,
        keep_free=0,
    )


def _answer(target: Target, reserved: Reserved, name: str = "vm1", iface: str = "nic") -> Answer:
    return Answer(
        reserved.id,
        reserved.mac,
        target.scope_id,
        "vm",
        name,
        "uid-" + name,
        iface,
        "stamp",
        datetime.now(UTC) + timedelta(seconds=300),
        target.pool_name,
        target.scope_path,
    )


def _rows(session: Session, mac: int) -> list[tuple[int, str, str, str]]:
    session.expire_all()
    return [
        (a.id, a.owner_kind, a.owner_name, a.state)
        for a in session.scalars(select(Allocation).where(Allocation.mac == mac))
    ]


def test_a_scope_not_made_yet_has_a_planned_target_with_the_pool_it_would_inherit(
    session: Session, actor: Actor, target: Target, database: Database
) -> None:
    assert resolve_target(database, "/k8s/new") is None
    planned = resolve_target(database, "/k8s/new", planned=True)
    assert planned == Target(target.generation, None, "/k8s/new", target.pool_id, target.pool_name)
    # Missing parents too: the nearest existing ancestor's pool (here the engine's).
    deeper = resolve_target(database, "/nowhere/new", planned=True)
    engine = resolve_target(database, "/")
    assert deeper is not None and engine is not None
    assert (deeper.scope_id, deeper.pool_id) == (None, engine.pool_id)
    # Reservations and records need a scope that exists.
    with pytest.raises(ValueError, match="existing scope"):
        _reserve(session, actor, planned)
    reserved = _reserve(session, actor, target)
    with pytest.raises(ValueError, match="scope exists"):
        record_answers(session, actor, [_answer(planned, reserved[0])])


def test_reserved_macs_are_held_pending_reservations_nobody_else_can_take(
    session: Session, actor: Actor, target: Target
) -> None:
    reserved = _reserve(session, actor, target)
    assert len({r.mac for r in reserved}) == 4
    for r in reserved:
        assert _rows(session, r.mac) == [(r.id, RESERVATION_KIND, HOLDER, "pending")]
        assert session.get(HeldMac, r.mac) is not None
    with pytest.raises(MacInUse):
        allocate_mac(
            session,
            actor,
            scope="/k8s/ns",
            owner=Owner("vm", "thief"),
            interface="nic",
            mac=format_mac_int(reserved[0].mac),
        )
    automatic = allocate_mac(session, actor, scope="/k8s/ns", owner=Owner("vm", "b"), interface="n")
    assert automatic.allocation.mac not in {r.mac for r in reserved}


def test_an_answer_becomes_the_owners_pending_allocation_in_place(
    session: Session, actor: Actor, target: Target, database: Database
) -> None:
    reserved = _reserve(session, actor, target)
    assert record_answers(session, actor, [_answer(target, reserved[0])]) == []
    session.commit()
    assert _rows(session, reserved[0].mac) == [(reserved[0].id, "vm", "vm1", "pending")]
    allocation = session.get(Allocation, reserved[0].id)
    assert allocation is not None and allocation.transaction == "stamp"
    assert allocation.owner_uid == "uid-vm1" and allocation.interface == "nic"
    _, held = owner_snapshot(database, scope_id=target.scope_id, owner_kind="vm", owner_name="vm1")
    assert held == {"nic": reserved[0].mac}
    assert recount(session) == stored(session)


def test_the_object_that_carries_a_reserved_mac_adopts_it_and_the_late_record_is_a_no_op(
    session: Session, actor: Actor, target: Target
) -> None:
    """A process answered, then died (or has not recorded yet): the reconciler reads the MAC
    back from the object and takes the reservation over; the late record changes nothing."""
    reserved = _reserve(session, actor, target)
    mac = format_mac_int(reserved[1].mac)
    adopted = allocate_mac(
        session,
        actor,
        scope="/k8s/ns",
        owner=Owner("vm", "vm1", "uid-vm1"),
        interface="nic",
        mac=mac,
        adopt_reserved=True,
    ).allocation
    assert adopted.id == reserved[1].id
    assert _rows(session, reserved[1].mac) == [(reserved[1].id, "vm", "vm1", "allocated")]
    assert record_answers(session, actor, [_answer(target, reserved[1])]) == []
    assert _rows(session, reserved[1].mac) == [(reserved[1].id, "vm", "vm1", "allocated")]
    assert recount(session) == stored(session)


def test_a_batch_with_adopted_answers_records_the_others_in_one_update(
    session: Session, actor: Actor, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler adopted one answer of a batch before it was recorded: the others are
    still recorded set-wise, not one by one through the kernel."""
    reserved = _reserve(session, actor, target)
    allocate_mac(
        session,
        actor,
        scope="/k8s/ns",
        owner=Owner("vm", "vm0", "uid-vm0"),
        interface="nic",
        mac=format_mac_int(reserved[0].mac),
        adopt_reserved=True,
    )
    answers = [_answer(target, r, name=f"vm{i}") for i, r in enumerate(reserved)]

    def one_by_one(*args: object, **kwargs: object) -> None:
        raise AssertionError("recorded one by one")

    monkeypatch.setattr(reservations, "_record_one", one_by_one)
    assert record_answers(session, actor, answers) == []
    assert [_rows(session, r.mac)[0][1:] for r in reserved] == [
        ("vm", "vm0", "allocated"),
        ("vm", "vm1", "pending"),
        ("vm", "vm2", "pending"),
        ("vm", "vm3", "pending"),
    ]
    assert recount(session) == stored(session)


def test_an_answer_whose_interface_holds_another_mac_keeps_its_reservation(
    session: Session, actor: Actor, target: Target
) -> None:
    """Two processes answered the same VM: the first record wins, the second reservation stays."""
    reserved = _reserve(session, actor, target)
    first, second = _answer(target, reserved[0]), _answer(target, reserved[2])
    assert record_answers(session, actor, [first]) == []
    assert record_answers(session, actor, [second]) == [second]
    assert _rows(session, reserved[2].mac) == [
        (reserved[2].id, RESERVATION_KIND, HOLDER, "pending")
    ]
    assert _rows(session, reserved[0].mac)[0][1:3] == ("vm", "vm1")


def test_unused_and_expired_reservations_are_released(
    session: Session, actor: Actor, target: Target
) -> None:
    reserved = _reserve(session, actor, target)
    record_answers(session, actor, [_answer(target, reserved[0])])
    assert release_reservations(session, actor, [r.id for r in reserved[:2]]) == 1
    assert session.get(HeldMac, reserved[1].mac) is None
    assert expire_reservations(session, actor, now=datetime.now(UTC)) == 0
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert expire_reservations(session, actor, now=later) == 2
    assert [session.get(HeldMac, r.mac) is None for r in reserved] == [False, True, True, True]
    assert recount(session) == stored(session)


def test_a_reserve_leaves_the_pool_room(session: Session, actor: Actor, database: Database) -> None:
    pool = create_pool(session, actor, name="tiny", ranges=["0a:00:00:00:00:00-0a:00:00:00:00:09"])
    create_scope(session, actor, kind="cluster", name="small", pool_id=pool.id)
    create_scope(session, actor, kind="namespace", name="ns", parent="/small")
    session.commit()
    small = resolve_target(database, "/small/ns")
    assert small is not None and small.pool_id == pool.id
    got = reserve_macs(
        session, actor, target=small, holder=HOLDER, first=0, count=8, ttl_seconds=60, keep_free=4
    )
    assert len(got) == 6  # 10 free, 4 kept for everyone else
    assert (
        reserve_macs(
            session,
            actor,
            target=small,
            holder=HOLDER,
            first=8,
            count=8,
            ttl_seconds=60,
            keep_free=4,
        )
        == []
    )


def test_the_topology_generation_moves_with_scope_pool_and_range_changes_only(
    session: Session, actor: Actor, target: Target
) -> None:
    def now() -> int:
        session.flush()
        return generation(session.connection())

    start = now()
    allocate_mac(session, actor, scope="/k8s/ns", owner=Owner("vm", "a"), interface="n")
    create_scope(session, actor, kind="namespace", name="other", parent="/k8s")
    assert now() == start  # allocations and new scopes change no cached answer
    pool = create_pool(
        session, actor, name="second", ranges=["0a:00:00:00:00:00-0a:00:00:00:00:ff"]
    )
    after_pool = now()
    assert after_pool > start
    assign_pool(session, actor, "/k8s/ns", pool.id)
    after_assign = now()
    assert after_assign > after_pool
    add_range(session, actor, pool.id, "0c:00:00:00:00:00-0c:00:00:00:00:ff")
    after_range = now()
    assert after_range > after_assign
    update_pool(session, actor, pool.id, allow_duplicates=True)
    after_rule = now()
    assert after_rule > after_range
    delete_scope(session, actor, "/k8s/other")
    assert now() > after_rule
    session.rollback()
    assert now() == start  # the bump commits or rolls back with the change
