"""Pools through the service layer: names, overlaps, the default pool, delete rules, stats."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import (
    DuplicatesExist,
    InvalidRange,
    NameInUse,
    PoolInUse,
    RangeOverlap,
)
from manager.core.mac import format_mac_int
from manager.db import AuditEvent, Pool
from manager.services import (
    add_range,
    allocate_mac,
    create_scope,
    delete_pool,
    ensure_default_pool,
    find_pool_by_name,
    get_default_pool,
    list_pools,
    pool_statistics,
    release_allocation,
    remove_range,
    update_pool,
)
from manager.services.pools import random_default_range
from tests.conftest import DEFAULT_RANGE
from tests.services.conftest import PoolFactory, row_counts

R1 = "0a:00:00:00:00:00-0a:00:00:00:00:ff"
R2 = "0a:00:00:00:01:00-0a:00:00:00:01:0f"


def test_create_and_find_case_insensitively(make_pool: PoolFactory, session: Session) -> None:
    pool = make_pool("Lab", R1)
    assert find_pool_by_name(session, "lAB").id == pool.id
    assert [p.name for p in list_pools(session)] == ["Default", "Lab"]
    assert pool_statistics(session, pool).size == 256


def test_name_unique_regardless_of_case(make_pool: PoolFactory, session: Session) -> None:
    make_pool("Lab", R1)
    before = row_counts(session)
    with pytest.raises(NameInUse, match="'Lab'"):
        make_pool("LAB", R2)
    assert row_counts(session) == before


def test_rename_to_taken_name_refused(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    make_pool("Lab", R1)
    other = make_pool("Other", R2)
    with pytest.raises(NameInUse):
        update_pool(session, actor, other.id, name="lab")
    # Changing only the case of its own name is allowed.
    assert update_pool(session, actor, other.id, name="OTHER").name == "OTHER"


def test_overlap_inside_one_pool_refused(make_pool: PoolFactory, session: Session) -> None:
    before = row_counts(session)
    with pytest.raises(RangeOverlap, match="0a:00:00:00:00:80"):
        make_pool("Lab", R1, "0a:00:00:00:00:80-0a:00:00:00:01:80")
    assert row_counts(session) == before


def test_overlap_across_pools_names_every_conflict(
    make_pool: PoolFactory, session: Session
) -> None:
    make_pool("Lab", R1)
    make_pool("Lab2", R2)
    spanning = "0a:00:00:00:00:f0-0a:00:00:00:01:05"
    with pytest.raises(RangeOverlap) as caught:
        make_pool("Wide", spanning)
    message = caught.value.message
    assert "'Lab'" in message and "'Lab2'" in message
    assert R1 in message and R2 in message
    assert {c["pool"] for c in caught.value.details["conflicts"]} == {"Lab", "Lab2"}
    with pytest.raises(RangeOverlap, match="'Default'"):
        make_pool("Inside default", "02:00:00:00:10:00-02:00:00:00:10:ff")


def test_adjacent_ranges_do_not_overlap(make_pool: PoolFactory, session: Session) -> None:
    make_pool("Lab", R1)
    adjacent = make_pool("Next", "0a:00:00:00:01:00-0a:00:00:00:01:00")
    assert pool_statistics(session, adjacent).size == 1


def test_default_pool_created_once_with_random_block(session: Session, actor: Actor) -> None:
    pool, created = ensure_default_pool(session, actor)
    assert not created and pool.is_default
    assert get_default_pool(session).id == pool.id
    for _ in range(5):
        rng = random_default_range()
        assert rng.size == 2**24
        assert rng.start >> 40 == 0x02 and rng.start & 0xFFFFFF == 0
        assert rng.end & 0xFFFFFF == 0xFFFFFF


def test_default_range_override_applied(session: Session) -> None:
    pool = get_default_pool(session)
    first = pool.ranges[0]
    assert f"{format_mac_int(first.start_mac)}-{format_mac_int(first.end_mac)}" == DEFAULT_RANGE


def test_default_pool_cannot_be_deleted(session: Session, actor: Actor) -> None:
    pool = get_default_pool(session)
    with pytest.raises(PoolInUse, match="default"):
        delete_pool(session, actor, pool.id)
    assert session.get(Pool, pool.id) is not None


def test_delete_refused_while_assigned_names_five_scopes(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Lab", R1)
    for i in range(7):
        create_scope(session, actor, kind="datacenter", name=f"dc{i}", pool_id=pool.id)
    before = row_counts(session)
    with pytest.raises(PoolInUse) as caught:
        delete_pool(session, actor, pool.id)
    assert "/dc0, /dc1, /dc2, /dc3, /dc4 and 2 more" in caught.value.message
    assert caught.value.details["scope_count"] == 7
    assert row_counts(session) == before


def test_delete_refused_while_holding_macs_then_allowed(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Lab", R1)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    result = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface="nic0")
    from manager.services import assign_pool

    assign_pool(session, actor, "/dc", None)
    with pytest.raises(PoolInUse, match="holds 1 allocation"):
        delete_pool(session, actor, pool.id)
    release_allocation(session, actor, result.allocation.id)
    delete_pool(session, actor, pool.id)
    session.flush()
    assert session.get(Pool, pool.id) is None


def test_allow_duplicates_off_refused_while_duplicates_exist(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Dup", R1, allow_duplicates=True)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    first = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface="n")
    mac = format_mac_int(first.allocation.mac)
    allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "b"), interface="n", mac=mac)
    with pytest.raises(DuplicatesExist) as caught:
        update_pool(session, actor, pool.id, allow_duplicates=False)
    assert mac in caught.value.message and caught.value.details["macs"] == [mac]
    assert pool.allow_duplicates is True
    assert pool_statistics(session, pool).duplicates == 1
    release_allocation(session, actor, first.allocation.id)
    assert update_pool(session, actor, pool.id, allow_duplicates=False).allow_duplicates is False


def test_range_edit_never_moves_a_held_mac(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Lab", R1)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    held = [
        allocate_mac(session, actor, scope="/dc", owner=Owner("vm", f"v{i}"), interface="n")
        for i in range(3)
    ]
    assert pool_statistics(session, pool).allocated == 3
    update_pool(session, actor, pool.id, ranges=[R2])
    stats = pool_statistics(session, pool)
    assert (stats.size, stats.allocated, stats.external, stats.available) == (16, 0, 3, 16)
    for result in held:
        session.refresh(result.allocation)
        assert result.allocation.in_range is True  # the row is untouched
    new = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "new"), interface="n")
    assert new.allocation.mac not in {r.allocation.mac for r in held}
    assert format_mac_int(new.allocation.mac).startswith("0a:00:00:00:01:")


def test_add_and_remove_range(make_pool: PoolFactory, session: Session, actor: Actor) -> None:
    pool = make_pool("Lab", R1)
    added = add_range(session, actor, pool.id, R2)
    assert pool_statistics(session, pool).size == 256 + 16
    with pytest.raises(RangeOverlap):
        add_range(session, actor, pool.id, "0a:00:00:00:01:08-0a:00:00:00:01:20")
    remove_range(session, actor, pool.id, added.id)
    assert pool_statistics(session, pool).size == 256
    with pytest.raises(InvalidRange, match="last range"):
        remove_range(session, actor, pool.id, pool.ranges[0].id)


def test_statistics_count_held_and_available(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Small", "0a:00:00:00:00:00-0a:00:00:00:00:03")
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    for i in range(3):
        allocate_mac(session, actor, scope="/dc", owner=Owner("vm", f"v{i}"), interface="n")
    stats = pool_statistics(session, pool)
    assert (stats.size, stats.allocated, stats.available, stats.duplicates) == (4, 3, 1, 0)


def test_every_pool_mutation_is_audited(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Lab", R1)
    update_pool(session, actor, pool.id, description="lab pool", ranges=[R1, R2])
    delete_pool(session, actor, pool.id)
    session.flush()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.target_type == "pool").order_by(AuditEvent.id)
    ).all()
    actions = [(e.action, e.actor, e.target) for e in events if e.target == "Lab"]
    assert actions == [
        ("pool.create", "tester", "Lab"),
        ("pool.update", "tester", "Lab"),
        ("pool.delete", "tester", "Lab"),
    ]
    update = events[-2].details
    assert update["description"] == {"from": "", "to": "lab pool"}
    assert update["ranges"]["to"] == [R1, R2]
    assert all(e.at is not None for e in events)
