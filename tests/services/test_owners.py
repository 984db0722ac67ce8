"""Owner-level services: align with observed NICs, rename, scoped expiry, shared MACs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse
from manager.core.mac import format_mac_int, parse_mac
from manager.db import Allocation, AuditEvent, Database
from manager.services import (
    allocate_mac,
    bootstrap,
    confirm_allocation,
    confirm_holdings,
    ensure_path,
    ensure_scope,
    find_allocations,
    get_default_pool,
    owners_holdings,
    update_pool,
)
from manager.services.owners import (
    align_owner,
    expire_pending_in,
    owners_named_like,
    rename_owner,
    shared_macs,
    subtree_holdings,
)
from tests.conftest import DEFAULT_RANGE

A = "02:00:00:00:00:0a"
B = "02:00:00:00:00:0b"
C = "02:00:00:00:00:0c"


def _ns(session: Session, actor: Actor, name: str = "ns") -> int:
    cluster = ensure_path(session, actor, "/k", kinds=["cluster"])
    return ensure_scope(session, actor, parent=cluster, kind="namespace", name=name).id


def _held(session: Session, scope: int) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (h.owner_name, h.interface): (format_mac_int(h.mac), h.state)
        for h in subtree_holdings(session, scope=scope)
    }


def test_align_confirms_releases_registers_and_keeps_in_flight(
    session: Session, actor: Actor
) -> None:
    scope = _ns(session, actor)
    vm = Owner("vm", "web")
    for iface, mac, tx in (("eth0", A, "1"), ("eth1", B, "1"), ("eth2", C, "9")):
        allocate_mac(
            session,
            actor,
            scope=scope,
            owner=vm,
            interface=iface,
            mac=mac,
            ttl_seconds=60,
            transaction=tx,
        )

    observed = {"eth0": parse_mac(A).value, "eth3": parse_mac("02:00:00:00:00:0d").value}
    result = align_owner(
        session,
        actor,
        scope=scope,
        owner=vm,
        observed=observed,
        settled=lambda tx: tx is not None and tx <= "5",
    )

    assert (result.confirmed, result.released, result.registered, result.in_flight) == (1, 1, 1, 1)
    assert _held(session, scope) == {
        ("web", "eth0"): (A, "allocated"),
        ("web", "eth2"): (C, "pending"),  # a newer change still in flight
        ("web", "eth3"): ("02:00:00:00:00:0d", "allocated"),
    }


def test_align_reports_a_mac_held_elsewhere_instead_of_forcing_it(
    session: Session, actor: Actor
) -> None:
    scope = _ns(session, actor)
    allocate_mac(session, actor, scope=scope, owner=Owner("vm", "first"), interface="eth0", mac=A)
    result = align_owner(
        session,
        actor,
        scope=scope,
        owner=Owner("vm", "second"),
        observed={"eth0": parse_mac(A).value},
        settled=lambda _tx: True,
    )
    assert result.registered == 0
    assert result.refused["eth0"]["mac"] == A
    assert [h["owner_name"] for h in result.refused["eth0"]["holders"]] == ["first"]
    assert find_allocations(session, mac=A).total == 1


def test_rename_moves_allocations_and_refuses_a_clash(session: Session, actor: Actor) -> None:
    scope = _ns(session, actor)
    allocate_mac(
        session,
        actor,
        scope=scope,
        owner=Owner("vm", "web-{admission:1}"),
        interface="eth0",
        mac=A,
        ttl_seconds=60,
    )
    allocate_mac(session, actor, scope=scope, owner=Owner("vm", "db"), interface="eth0", mac=B)
    assert set(owners_named_like(session, scope=scope, owner_kind="vm", prefix="web-{")) == {
        "web-{admission:1}"
    }
    with pytest.raises(InterfaceInUse):
        rename_owner(
            session,
            actor,
            scope=scope,
            owner_kind="vm",
            old_name="web-{admission:1}",
            new_name="db",
        )
    moved = rename_owner(
        session,
        actor,
        scope=scope,
        owner_kind="vm",
        old_name="web-{admission:1}",
        new_name="web-x1",
        uid="u-1",
    )
    assert moved == 1
    rows = find_allocations(session, owner_name="web-x1").items
    assert [(r.interface, r.owner_uid, format_mac_int(r.mac)) for r in rows] == [("eth0", "u-1", A)]


def test_expire_pending_in_touches_only_the_subtree(session: Session, actor: Actor) -> None:
    inside = _ns(session, actor)
    outside = ensure_path(session, actor, "/other", kinds=["cluster"]).id
    past = datetime.now(UTC) - timedelta(seconds=120)
    for scope in (inside, outside):
        allocate_mac(
            session,
            actor,
            scope=scope,
            owner=Owner("vm", "x"),
            interface="eth0",
            ttl_seconds=60,
            now=past,
        )
    allocate_mac(
        session, actor, scope=inside, owner=Owner("vm", "y"), interface="eth0", ttl_seconds=60
    )
    expired = expire_pending_in(session, actor, scope="/k")
    assert [(h.scope_name, h.owner_name) for h in expired] == [("ns", "x")]
    assert {h.owner_name for h in subtree_holdings(session, scope="/k")} == {"y"}
    assert len(subtree_holdings(session, scope=outside)) == 1


def test_shared_macs_lists_every_holder_of_a_duplicate(session: Session, actor: Actor) -> None:
    scope = _ns(session, actor)
    update_pool(session, actor, get_default_pool(session).id, allow_duplicates=True)
    outside = ensure_path(session, actor, "/other", kinds=["cluster"]).id
    allocate_mac(
        session, actor, scope=outside, owner=Owner("ovirt-vm", "o"), interface="nic1", mac=A
    )
    allocate_mac(session, actor, scope=scope, owner=Owner("vm", "v"), interface="eth0", mac=A)
    allocate_mac(session, actor, scope=scope, owner=Owner("vm", "w"), interface="eth0", mac=B)
    shared = shared_macs(session, scope="/k")
    assert list(shared) == [parse_mac(A).value]
    assert sorted(h["owner_name"] for h in shared[parse_mac(A).value]) == ["o", "v"]


def _pending_vms(database: Database, actor: Actor, names: list[str]) -> int:
    """Committed: a namespace scope and one pending allocation per name (MACs A, A+1, …)."""
    with database.session(write=True) as session:
        bootstrap(session, default_range=DEFAULT_RANGE)
        scope = _ns(session, actor)
        for i, name in enumerate(names):
            allocate_mac(
                session,
                actor,
                scope=scope,
                owner=Owner("vm", name),
                interface="nic",
                mac=format_mac_int(parse_mac(A).value + i),
                ttl_seconds=60,
                transaction="1",
            )
    return scope


@pytest.mark.parametrize("count", [2, 30])  # few owners: prepared reads; many: IN queries
def test_confirm_holdings_confirms_set_wise_as_confirm_allocation_does(
    database: Database, actor: Actor, count: int
) -> None:
    names = [f"vm{i}" for i in range(count)]
    scope = _pending_vms(database, actor, names)
    owners = [(scope, "vm", name) for name in names]
    held = owners_holdings(database, [*owners, (scope, "vm", "nobody"), (scope, "pod", "vm0")])
    assert set(held) == set(owners)
    pending = [h for hs in held.values() for h in hs]
    assert {(h.state, h.scope_name, h.interface) for h in pending} == {("pending", "ns", "nic")}
    first = held[owners[0]][0]

    with database.session(write=True) as session:
        assert confirm_holdings(session, actor, pending, uids={first.id: "uid-0"})

    with database.session() as session:
        rows = {a.owner_name: a for a in session.scalars(select(Allocation))}
        assert {n: (a.state, a.expires_at, a.owner_uid) for n, a in rows.items()} == {
            name: ("allocated", None, "uid-0" if name == "vm0" else None) for name in names
        }
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "allocation.confirm")
        ).all()
        assert sorted((e.target, e.details["allocation_id"]) for e in events) == sorted(
            (format_mac_int(h.mac), h.id) for h in pending
        )


def test_confirm_holdings_writes_nothing_when_a_holding_changed(
    database: Database, actor: Actor
) -> None:
    scope = _pending_vms(database, actor, ["web", "db"])
    held = owners_holdings(database, [(scope, "vm", "web"), (scope, "vm", "db")])
    pending = [h for hs in held.values() for h in hs]
    with database.session(write=True) as session:  # changed meanwhile
        confirm_allocation(session, actor, held[(scope, "vm", "db")][0].id)

    with database.session(write=True) as session:
        assert not confirm_holdings(session, actor, pending, uids={pending[0].id: "u"})

    after = owners_holdings(database, [(scope, "vm", "web"), (scope, "vm", "db")])
    assert {k[2]: [(h.state, h.owner_uid) for h in v] for k, v in after.items()} == {
        "web": [("pending", None)],
        "db": [("allocated", None)],
    }
    with database.session() as session:
        confirms = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "allocation.confirm")
        ).all()
    assert len(confirms) == 1  # confirm_allocation's own
