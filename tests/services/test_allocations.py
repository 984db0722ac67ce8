"""Allocations through the service layer: automatic, requested, idempotent, pending, cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse, InvalidState, MacInUse, PoolExhausted
from manager.core.mac import format_mac_int, parse_mac
from manager.db import Allocation, AuditEvent, Database, HeldMac
from manager.services import (
    allocate_mac,
    confirm_allocation,
    create_scope,
    expire_pending,
    find_allocations,
    list_duplicates,
    list_events,
    mac_info,
    pool_statistics,
    release_allocation,
    release_owner,
)
from manager.services.index_cache import forget
from tests.conftest import ACTOR
from tests.services.conftest import PoolFactory, row_counts

SMALL = "0a:00:00:00:00:00-0a:00:00:00:00:03"


def _alloc(session: Session, actor: Actor, name: str, **kwargs: Any) -> Allocation:
    scope = kwargs.pop("scope", "/dc")
    return allocate_mac(
        session, actor, scope=scope, owner=Owner("vm", name), interface="nic0", **kwargs
    ).allocation


@pytest.fixture
def small(make_pool: PoolFactory, session: Session, actor: Actor) -> int:
    """A four-MAC pool assigned to /dc; returns its id."""
    pool = make_pool("Small", SMALL)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    return pool.id


def test_automatic_macs_in_order_and_unicast(session: Session, actor: Actor, small: int) -> None:
    macs = [_alloc(session, actor, f"v{i}").mac for i in range(4)]
    assert macs == sorted(set(macs))
    assert all(0x0A0000000000 <= m <= 0x0A0000000003 for m in macs)
    with pytest.raises(PoolExhausted, match="'Small'"):
        _alloc(session, actor, "v5")


def test_idempotent_per_owner_identity(session: Session, actor: Actor, small: int) -> None:
    first = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface="nic0")
    again = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface="nic0")
    assert first.created and not again.created
    assert again.allocation.id == first.allocation.id
    other_nic = allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface="nic1")
    assert other_nic.allocation.mac != first.allocation.mac
    same_mac = format_mac_int(first.allocation.mac)
    repeat = allocate_mac(
        session, actor, scope="/dc", owner=Owner("vm", "a"), interface="nic0", mac=same_mac
    )
    assert not repeat.created
    with pytest.raises(InterfaceInUse, match=same_mac):
        allocate_mac(
            session,
            actor,
            scope="/dc",
            owner=Owner("vm", "a"),
            interface="nic0",
            mac="0a:00:00:00:00:03",
        )
    assert session.scalar(select(func.count()).select_from(Allocation)) == 2


def test_requested_mac_in_any_form(session: Session, actor: Actor, small: int) -> None:
    got = _alloc(session, actor, "a", mac="0A-00-00-00-00-02")
    assert got.mac == 0x0A0000000002 and got.in_range
    outside = _alloc(session, actor, "b", mac="0e00.0000.0001")
    assert outside.in_range is False
    info = mac_info(session, "0e:00:00:00:00:01")
    assert info.pool is None and [h.id for h in info.holders] == [outside.id]


def test_uniqueness_is_system_wide(
    make_pool: PoolFactory, session: Session, actor: Actor, small: int
) -> None:
    other = make_pool("Other", "0c:00:00:00:00:00-0c:00:00:00:00:ff")
    create_scope(session, actor, kind="datacenter", name="dc2", pool_id=other.id)
    taken = _alloc(session, actor, "a", scope="/dc2")
    before = row_counts(session)
    with pytest.raises(MacInUse) as caught:
        _alloc(session, actor, "b", mac=format_mac_int(taken.mac))
    assert "vm 'a'" in caught.value.message and "/dc2" in caught.value.message
    assert caught.value.details["holders"][0]["allocation_id"] == taken.id
    assert row_counts(session) == before
    # A requested MAC inside another pool's range is taken from that pool's free MACs.
    borrowed = _alloc(session, actor, "c", mac="0c:00:00:00:00:10")
    assert borrowed.in_range is False
    assert pool_statistics(session, other).allocated == 2


def test_duplicates_only_when_every_pool_allows(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    dup_a = make_pool("DupA", "0a:00:00:00:00:00-0a:00:00:00:00:ff", allow_duplicates=True)
    dup_b = make_pool("DupB", "06:00:00:00:00:00-06:00:00:00:00:ff", allow_duplicates=True)
    strict = make_pool("Strict", "0c:00:00:00:00:00-0c:00:00:00:00:ff")
    for name, pool in (("a", dup_a), ("b", dup_b), ("s", strict)):
        create_scope(session, actor, kind="datacenter", name=name, pool_id=pool.id)
    first = _alloc(session, actor, "one", scope="/a")
    mac = format_mac_int(first.mac)
    second = _alloc(session, actor, "two", scope="/b", mac=mac)
    assert second.mac == first.mac
    with pytest.raises(MacInUse, match="'Strict'"):
        _alloc(session, actor, "three", scope="/s", mac=mac)
    strict_mac = format_mac_int(_alloc(session, actor, "four", scope="/s").mac)
    with pytest.raises(MacInUse, match="'Strict'"):
        _alloc(session, actor, "five", scope="/a", mac=strict_mac)
    # Automatic allocation never hands out a held MAC, even in a duplicates pool.
    autos = {_alloc(session, actor, f"auto{i}", scope="/b").mac for i in range(5)}
    assert first.mac not in autos
    page = list_duplicates(session)
    assert page.total == 1 and str(page.items[0].mac) == mac


def test_release_of_one_holder_keeps_duplicate(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    pool = make_pool("Dup", "0a:00:00:00:00:00-0a:00:00:00:00:ff", allow_duplicates=True)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    first = _alloc(session, actor, "a")
    second = _alloc(session, actor, "b", mac=format_mac_int(first.mac))
    release_allocation(session, actor, first.id)
    assert session.get(HeldMac, first.mac) is not None
    assert pool_statistics(session, pool).allocated == 1
    release_allocation(session, actor, second.id)
    session.flush()
    assert session.get(HeldMac, first.mac) is None
    assert pool_statistics(session, pool).allocated == 0


def test_pending_confirm_and_expiry(session: Session, actor: Actor, small: int) -> None:
    now = datetime.now(UTC)
    pending = _alloc(session, actor, "p", ttl_seconds=60, now=now)
    doomed = _alloc(session, actor, "q", ttl_seconds=60, now=now)
    assert pending.state == "pending" and pending.expires_at is not None
    confirmed = confirm_allocation(session, actor, pending.id)
    assert confirmed.state == "allocated" and confirmed.expires_at is None
    assert expire_pending(session, actor, now=now + timedelta(seconds=30)) == 0
    assert expire_pending(session, actor, now=now + timedelta(seconds=61)) == 1
    session.flush()
    assert session.get(Allocation, doomed.id) is None
    assert session.get(Allocation, pending.id) is not None
    assert list_events(session, action="allocation.expired").total == 1


def test_reserved_is_held_and_cannot_be_confirmed(
    session: Session, actor: Actor, small: int
) -> None:
    reserved = _alloc(session, actor, "router", state="reserved")
    assert reserved.state == "reserved"
    with pytest.raises(InvalidState, match="reserved"):
        confirm_allocation(session, actor, reserved.id)
    autos = {_alloc(session, actor, f"v{i}").mac for i in range(3)}
    assert reserved.mac not in autos
    page = find_allocations(session, state="reserved")
    assert [a.id for a in page.items] == [reserved.id]


def test_release_owner_releases_each_interface(session: Session, actor: Actor, small: int) -> None:
    for nic in ("nic0", "nic1"):
        allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "a"), interface=nic)
    released = release_owner(session, actor, scope="/dc", owner_kind="vm", owner_name="a")
    assert sorted(r["interface"] for r in released) == ["nic0", "nic1"]
    assert find_allocations(session).total == 0


def test_cursor_reuses_released_mac_as_late_as_possible(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    # Two ranges of two MACs each: the cursor walks across them, then wraps.
    pool = make_pool(
        "Two", "0e:00:00:00:00:00-0e:00:00:00:00:01", "0a:00:00:00:00:00-0a:00:00:00:00:01"
    )
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    a = _alloc(session, actor, "a")
    b = _alloc(session, actor, "b")
    release_allocation(session, actor, a.id)
    c = _alloc(session, actor, "c")
    d = _alloc(session, actor, "d")
    assert [a.mac, b.mac, c.mac, d.mac] == [
        0x0A0000000000,
        0x0A0000000001,
        0x0E0000000000,
        0x0E0000000001,
    ]
    e = _alloc(session, actor, "e")  # wraps around to the released MAC
    assert e.mac == a.mac
    with pytest.raises(PoolExhausted):
        _alloc(session, actor, "f")


def test_cursor_survives_restart(
    database: Database, session: Session, actor: Actor, small: int
) -> None:
    first = _alloc(session, actor, "a")
    release_allocation(session, actor, first.id)
    session.commit()
    forget(session)
    database.dispose()
    fresh = Database(str(database.url))
    try:
        with fresh.session(write=True) as s2:
            after = allocate_mac(
                s2, ACTOR, scope="/dc", owner=Owner("vm", "b"), interface="nic0"
            ).allocation
            assert after.mac == first.mac + 1  # not the just-released MAC
    finally:
        with fresh.session() as s3:
            forget(s3)
        fresh.dispose()


def test_low_and_exhausted_warnings(session: Session, actor: Actor, small: int) -> None:
    session.low_threshold = 2
    held = [_alloc(session, actor, f"v{i}") for i in range(4)]
    warnings = list_events(session, severity="warning")
    assert [e.action for e in reversed(warnings.items)] == ["pool.low", "pool.exhausted"]
    assert warnings.items[0].details["size"] == 4
    release_allocation(session, actor, held[0].id)
    release_allocation(session, actor, held[1].id)
    release_allocation(session, actor, held[2].id)  # availability recovers: warning re-armed
    _alloc(session, actor, "again")
    _alloc(session, actor, "again2")
    assert list_events(session, action="pool.low").total == 2


def test_allocation_events_name_actor_and_target(
    session: Session, actor: Actor, small: int
) -> None:
    got = _alloc(session, actor, "a")
    release_allocation(session, actor, got.id)
    session.flush()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.target_type == "mac").order_by(AuditEvent.id)
    ).all()
    mac = format_mac_int(got.mac)
    assert [(e.action, e.actor, e.target) for e in events] == [
        ("allocation.create", "tester", mac),
        ("allocation.released", "tester", mac),
    ]
    assert events[0].details["owner_name"] == "a" and events[0].details["scope"] == "/dc"
    assert parse_mac(events[1].target_id).value == got.mac
