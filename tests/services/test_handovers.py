"""Migration hand-overs in the kernel: a migrated VM takes its source VM's MAC, and until the
move is final, releasing it gives the MAC back to the source, never to the free pool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse, InvalidInput, MacInUse
from manager.core.mac import format_mac_int
from manager.db import Allocation, AuditEvent, HeldMac, Pool
from manager.services import (
    Handover,
    allocate_mac,
    complete_handovers,
    create_scope,
    expire_pending,
    find_allocations,
    pending_handovers,
    release_allocation,
    rename_owner,
)
from manager.services.allocations import AllocationRequest, AllocationResult, allocate_macs
from manager.services.bulk_allocations import AllocationPlan
from tests.services.conftest import PoolFactory
from tests.services.recount import recount, stored

OVIRT_ID = "3d5a3a2e-0b5f-4c53-9d8a-0f7d1c2b9e11"
MAC = "0a:00:00:00:00:05"
MAC2 = "0a:00:00:00:00:06"


@pytest.fixture
def estate(session: Session, actor: Actor, make_pool: PoolFactory) -> None:
    """An oVirt data center whose VM legacy-web holds MAC (and MAC2), and a namespace scope."""
    ovirt = make_pool("ovirt", "0a:00:00:00:00:00-0a:00:00:00:00:ff")
    k8s = make_pool("k8s", "0c:00:00:00:00:00-0c:00:00:00:00:ff")
    create_scope(session, actor, kind="datacenter", name="dc1", pool_id=ovirt.id)
    cluster = create_scope(session, actor, kind="cluster", name="ocp", pool_id=k8s.id)
    create_scope(session, actor, kind="namespace", name="team-a", parent=cluster.id)
    for nic, mac in (("nic1", MAC), ("nic2", MAC2)):
        allocate_mac(
            session,
            actor,
            scope="/dc1",
            owner=Owner("ovirt-vm", "legacy-web", OVIRT_ID),
            interface=nic,
            mac=mac,
        )


def _take(session: Session, actor: Actor, mac: str = MAC, **kwargs: object) -> Allocation:
    handover = kwargs.pop("handover", Handover(OVIRT_ID, plan="plan-1", migration="mig-1"))
    return allocate_mac(
        session,
        actor,
        scope="/ocp/team-a",
        owner=Owner("vm", str(kwargs.pop("name", "legacy-web"))),
        interface=str(kwargs.pop("interface", "default")),
        mac=mac,
        handover=handover,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    ).allocation


def _holders(session: Session, mac: str) -> list[tuple[str, str, str]]:
    session.expire_all()
    rows = session.scalars(
        select(Allocation).where(Allocation.mac == int(mac.replace(":", ""), 16))
    ).all()
    return [(a.owner_kind, a.owner_name, a.scope.path) for a in rows]


@pytest.mark.usefixtures("estate")
def test_the_migrated_vm_takes_its_mac_and_the_audit_log_names_the_move(
    session: Session, actor: Actor
) -> None:
    source_id = session.scalars(
        select(Allocation.id).where(Allocation.owner_kind == "ovirt-vm")
    ).first()
    taken = _take(session, actor)
    assert taken.id == source_id, "the row itself moves: the MAC is never free"
    assert (taken.owner_kind, taken.owner_name, taken.interface) == ("vm", "legacy-web", "default")
    assert taken.scope.path == "/ocp/team-a" and taken.pool.name == "k8s"
    assert taken.handover == "pending"
    assert taken.source is not None and taken.source["owner_uid"] == OVIRT_ID
    assert _holders(session, MAC) == [("vm", "legacy-web", "/ocp/team-a")]
    assert session.scalar(select(func.count()).select_from(HeldMac)) == 2
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "allocation.handover")
    ).one()
    assert event.details["source_vm"] == {"name": "legacy-web", "id": OVIRT_ID}
    assert (event.details["plan"], event.details["migration"]) == ("plan-1", "mig-1")
    assert pending_handovers(session) == 1
    assert stored(session) == recount(session)


@pytest.mark.usefixtures("estate")
@pytest.mark.parametrize("handover", [None, Handover("another-vm-id")])
def test_without_the_source_identity_the_mac_is_in_use(
    session: Session, actor: Actor, handover: Handover | None
) -> None:
    with pytest.raises(MacInUse, match="ovirt-vm 'legacy-web'"):
        _take(session, actor, handover=handover)
    assert _holders(session, MAC) == [("ovirt-vm", "legacy-web", "/dc1")]


@pytest.mark.usefixtures("estate")
def test_releasing_a_pending_handover_gives_the_mac_back(session: Session, actor: Actor) -> None:
    taken = _take(session, actor)
    answer = release_allocation(session, actor, taken.id)
    assert answer["returned_to"]["owner_kind"] == "ovirt-vm"
    assert _holders(session, MAC) == [("ovirt-vm", "legacy-web", "/dc1")]
    back = session.get(Allocation, taken.id)
    assert back is not None and back.handover is None and back.source is None
    assert (back.interface, back.pool.name, back.owner_uid) == ("nic1", "ovirt", OVIRT_ID)
    assert session.scalar(select(func.count()).select_from(HeldMac)) == 2
    assert stored(session) == recount(session)
    # And the migration can be tried again.
    assert _take(session, actor).handover == "pending"


@pytest.mark.usefixtures("estate")
def test_an_unconfirmed_webhook_handover_expires_back_to_the_source(
    session: Session, actor: Actor
) -> None:
    taken = _take(session, actor, ttl_seconds=60)
    assert taken.state == "pending"
    assert expire_pending(session, actor, now=datetime.now(UTC) + timedelta(minutes=5)) == 1
    assert _holders(session, MAC) == [("ovirt-vm", "legacy-web", "/dc1")]
    back = session.get(Allocation, taken.id)
    assert back is not None and back.state == "allocated"


@pytest.mark.usefixtures("estate")
def test_completed_handover_releases_like_any_allocation(session: Session, actor: Actor) -> None:
    taken = _take(session, actor)
    done = complete_handovers(session, actor, plan="plan-1")
    assert [a.id for a in done] == [taken.id]
    assert taken.handover == "final"
    assert find_allocations(session, handover="final").total == 1
    assert complete_handovers(session, actor, plan="plan-1") == [], "twice is harmless"
    release_allocation(session, actor, taken.id)
    assert _holders(session, MAC) == []
    assert session.scalar(select(func.count()).select_from(HeldMac)) == 1
    assert stored(session) == recount(session)


def _reimport(session: Session, actor: Actor, mac: str) -> AllocationResult:
    """legacy-web's nic1 imported again, with ``mac``."""
    return allocate_mac(
        session,
        actor,
        scope="/dc1",
        owner=Owner("ovirt-vm", "legacy-web", OVIRT_ID),
        interface="nic1",
        mac=mac,
    )


@pytest.mark.usefixtures("estate")
def test_the_source_nic_stays_taken_while_its_handover_is_pending(
    session: Session, actor: Actor
) -> None:
    """Found by the hand-over state machine: import, hand over, import the source NIC again
    with another MAC, delete the copy: the give-back met the new row (a unique-key 500)."""
    taken = _take(session, actor)
    with pytest.raises(InterfaceInUse, match="being handed over with 0a:00:00:00:00:05") as err:
        _reimport(session, actor, "0a:00:00:00:00:07")
    assert err.value.details["handover"] == "pending"
    assert err.value.details["holder"]["owner_name"] == "legacy-web"
    # The same MAC again (an importer run twice) is a repeat, not an error: it names the copy.
    again = _reimport(session, actor, MAC)
    assert not again.created and again.allocation.id == taken.id
    # The bulk path (the importer's) follows the same rule.
    request = AllocationRequest(
        "/dc1", Owner("ovirt-vm", "legacy-web", OVIRT_ID), "nic1", "0a:00:00:00:00:07"
    )
    with pytest.raises(InterfaceInUse, match="being handed over"):
        allocate_macs(session, actor, [request] * 1 + _filler(20))
    # Deleting the copy gives the MAC back: the identity was free for it.
    release_allocation(session, actor, taken.id)
    assert _holders(session, MAC) == [("ovirt-vm", "legacy-web", "/dc1")]
    assert stored(session) == recount(session)


def _filler(count: int) -> list[AllocationRequest]:
    """Requests for other VMs' NICs: a batch above the few-rows lookup takes the bulk path."""
    return [
        AllocationRequest("/dc1", Owner("ovirt-vm", f"other-{i}"), "nic1") for i in range(count)
    ]


@pytest.mark.usefixtures("estate")
def test_a_final_handover_frees_the_source_identity(session: Session, actor: Actor) -> None:
    _take(session, actor)
    complete_handovers(session, actor, plan="plan-1")
    fresh = _reimport(session, actor, "0a:00:00:00:00:07").allocation
    assert (fresh.owner_name, fresh.interface, fresh.handover) == ("legacy-web", "nic1", None)


@pytest.mark.usefixtures("estate")
def test_no_owner_is_renamed_onto_a_source_identity_in_a_pending_handover(
    session: Session, actor: Actor
) -> None:
    _take(session, actor)
    allocate_mac(session, actor, scope="/dc1", owner=Owner("ovirt-vm", "draft"), interface="nic1")
    with pytest.raises(InterfaceInUse, match="nic1"):
        rename_owner(
            session,
            actor,
            scope="/dc1",
            owner_kind="ovirt-vm",
            old_name="draft",
            new_name="legacy-web",
        )


@pytest.mark.usefixtures("estate")
def test_a_second_copy_of_the_same_vm_gets_nothing_while_the_first_is_pending(
    session: Session, actor: Actor
) -> None:
    _take(session, actor)
    with pytest.raises(MacInUse, match="vm 'legacy-web'"):
        _take(session, actor, name="legacy-web-2")


@pytest.mark.usefixtures("estate")
def test_several_nics_are_matched_by_mac_and_new_macs_are_ordinary(
    session: Session, actor: Actor
) -> None:
    handover = Handover(OVIRT_ID, plan="plan-1")
    owner = Owner("vm", "legacy-web")
    results = allocate_macs(
        session,
        actor,
        [
            AllocationRequest("/ocp/team-a", owner, "a", mac=MAC2, handover=handover),
            AllocationRequest("/ocp/team-a", owner, "b", mac=MAC, handover=handover),
            AllocationRequest(
                "/ocp/team-a", owner, "c", mac="0c:00:00:00:00:09", handover=handover
            ),
        ],
    )
    assert [r.allocation.handover for r in results] == ["pending", "pending", None]
    assert [r.created for r in results] == [True, True, True]
    assert _holders(session, MAC2) == [("vm", "legacy-web", "/ocp/team-a")]
    assert {a.interface for a in (r.allocation for r in results)} == {"a", "b", "c"}
    assert stored(session) == recount(session)
    # A retry of the same request is idempotent.
    again = allocate_mac(
        session, actor, scope="/ocp/team-a", owner=owner, interface="b", mac=MAC, handover=handover
    )
    assert not again.created and again.allocation.id == results[1].allocation.id


def test_a_duplicates_allowed_mac_moves_only_the_source_holder(
    session: Session, actor: Actor, make_pool: PoolFactory
) -> None:
    dup = make_pool("dup", "0e:00:00:00:00:00-0e:00:00:00:00:ff", allow_duplicates=True)
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=dup.id)
    cluster = create_scope(session, actor, kind="cluster", name="c")
    create_scope(session, actor, kind="namespace", name="ns", parent=cluster.id, pool_id=dup.id)
    mac = "0e:00:00:00:00:01"
    allocate_mac(
        session, actor, scope="/dc", owner=Owner("ovirt-vm", "a", "id-a"), interface="n", mac=mac
    )
    allocate_mac(session, actor, scope="/dc", owner=Owner("device", "b"), interface="n", mac=mac)
    allocate_mac(
        session,
        actor,
        scope="/c/ns",
        owner=Owner("vm", "a"),
        interface="n",
        mac=mac,
        handover=Handover("id-a"),
    )
    assert sorted(_holders(session, mac)) == [("device", "b", "/dc"), ("vm", "a", "/c/ns")]
    assert stored(session) == recount(session)


@pytest.mark.usefixtures("estate")
def test_completion_needs_exactly_one_selector(session: Session, actor: Actor) -> None:
    with pytest.raises(InvalidInput):
        complete_handovers(session, actor)
    with pytest.raises(InvalidInput):
        complete_handovers(session, actor, plan="p", allocation_id=1)


KUBEVIRT_UID = "9f8e7d6c-5555-4c53-9d8a-0f7d1c2b9e11"


def _kubevirt_source(
    session: Session, actor: Actor, make_pool: PoolFactory
) -> tuple[Pool, Allocation]:
    """Cluster /east with namespaces old and new; VM old/db (its UID recorded) holds a MAC."""
    pool = make_pool("k8s", "0c:00:00:00:00:00-0c:00:00:00:00:ff")
    cluster = create_scope(session, actor, kind="cluster", name="east", pool_id=pool.id)
    create_scope(session, actor, kind="namespace", name="old", parent=cluster.id)
    create_scope(session, actor, kind="namespace", name="new", parent=cluster.id)
    owner = Owner("vm", "db", KUBEVIRT_UID)
    source = allocate_mac(session, actor, scope="/east/old", owner=owner, interface="default")
    return pool, source.allocation


def _move_to_new(session: Session, actor: Actor, mac: str) -> Allocation:
    """VM new/db, labelled vmID=<old/db's UID>, takes ``mac`` over (pending)."""
    return allocate_mac(
        session,
        actor,
        scope="/east/new",
        owner=Owner("vm", "db"),
        interface="default",
        mac=mac,
        handover=Handover(KUBEVIRT_UID, plan="ocp-plan"),
    ).allocation


def test_a_kubevirt_vm_moved_to_another_namespace_takes_its_macs_by_uid(
    session: Session, actor: Actor, make_pool: PoolFactory
) -> None:
    """Forklift's OCP-to-OCP moves: the source is a KubeVirt VM whose allocation records its
    UID; the target, labelled vmID=<that UID>, takes the MAC; a VM without it cannot."""
    _, source = _kubevirt_source(session, actor, make_pool)
    mac = format_mac_int(source.mac)
    with pytest.raises(MacInUse):
        allocate_mac(
            session,
            actor,
            scope="/east/new",
            owner=Owner("vm", "db"),
            interface="default",
            mac=mac,
        )
    moved = _move_to_new(session, actor, mac)
    assert (moved.id, moved.scope.path, moved.handover) == (source.id, "/east/new", "pending")
    release_allocation(session, actor, moved.id)  # the plan failed: back to the source VM
    assert _holders(session, mac) == [("vm", "db", "/east/old")]


def test_a_vm_recreated_at_a_source_identity_gets_no_mac_until_the_handover_ends(
    session: Session, actor: Actor, make_pool: PoolFactory
) -> None:
    """KubeVirt to KubeVirt: the source VM is deleted and one of the same name created while
    its hand-over is pending. An automatic MAC for it would take the identity the MAC goes
    back to; the webhook's planned path (which reads the owner's rows itself) refuses too."""
    pool, source = _kubevirt_source(session, actor, make_pool)
    old, owner = source.scope, Owner("vm", "db", KUBEVIRT_UID)
    mac = format_mac_int(source.mac)
    moved = _move_to_new(session, actor, mac)
    with pytest.raises(InterfaceInUse, match=f"being handed over with {mac}.*another MAC"):
        allocate_mac(session, actor, scope="/east/old", owner=owner, interface="default")
    plan = AllocationPlan(session, actor)
    with pytest.raises(InterfaceInUse, match="being handed over"):
        plan.allocate(
            [AllocationRequest(old, Owner("vm", "db"), "default")],
            [(old, pool.id)],
            unheld=True,
        )
    plan.undo()
    release_allocation(session, actor, moved.id)  # the plan failed: back to the source VM
    assert _holders(session, mac) == [("vm", "db", "/east/old")]
    assert stored(session) == recount(session)
