"""Migration hand-over over real HTTPS: a VirtualMachine that Forklift creates for an imported
oVirt VM (``vmID`` label, MAC set) is admitted with that VM's MAC, which moves to it and goes
back to the oVirt VM if the copy is deleted before the hand-over is final."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from manager.core.actor import Actor, Owner
from manager.core.mac import format_mac_int
from manager.db import Allocation, AuditEvent
from manager.services import (
    allocate_mac,
    complete_handovers,
    create_pool,
    create_scope,
    find_allocations,
    get_scope,
    release_owner,
)
from plugins.kubernetes.admission import REQUESTED_IN_USE, VM_ALLOCATE_PREFIX, VM_CREATE_PREFIX
from plugins.kubernetes.patches import TRANSACTION_ANNOTATION
from tests.plugins.kubernetes.test_admission_vm import MULTUS_NET, POD_NET, vm
from tests.plugins.kubernetes.test_webhook_https import admit, client, held, webhook
from tests.plugins.kubernetes.webhook_harness import Webhook

__all__ = ["client", "webhook"]  # module-scoped fixtures of the HTTPS suite, reused here

ACTOR = Actor("ovirt-import", "importer")
# Each source VM gets its own /24-sized block: counted, never drawn at random, so two fixtures of
# one database can never pick overlapping ranges.
_BLOCKS = itertools.count(1)


@pytest.fixture
def source(webhook: Webhook) -> Iterator[dict[str, Any]]:
    """An oVirt VM as the importer leaves it: owner kind ovirt-vm, uid = VM id, two NICs."""
    tag = uuid.uuid4().hex[:8]
    vm_id = str(uuid.uuid4())
    block = 0x0E_00_00_00_00_00 + next(_BLOCKS) * 0x100
    macs = [format_mac_int(block + 1), format_mac_int(block + 2)]
    with webhook.database.session(write=True) as session:
        pool = create_pool(
            session,
            ACTOR,
            name=f"ovirt-{tag}",
            ranges=[f"{format_mac_int(block)}-{format_mac_int(block + 0xFF)}"],
        )
        create_scope(session, ACTOR, kind="datacenter", name=f"dc-{tag}", pool_id=pool.id)
        for nic, mac in zip(("nic1", "nic2"), macs, strict=True):
            allocate_mac(
                session,
                ACTOR,
                scope=f"/dc-{tag}",
                owner=Owner("ovirt-vm", f"legacy-{tag}", vm_id),
                interface=nic,
                mac=mac,
            )
    yield {"id": vm_id, "name": f"legacy-{tag}", "macs": macs, "dc": f"/dc-{tag}"}


def forklift_vm(
    ns: str, source: dict[str, Any], *, vm_id: str | None = None, nics: int = 1
) -> dict[str, Any]:
    """The VirtualMachine Forklift creates: MACs preserved, vmID/plan/migration labels."""
    interfaces: list[dict[str, Any]] = [
        {"name": "default", "masquerade": {}, "macAddress": source["macs"][0]}
    ]
    networks = [POD_NET]
    if nics == 2:
        interfaces.append({"name": "br1", "bridge": {}, "macAddress": source["macs"][1]})
        networks.append(MULTUS_NET)
    obj = vm(interfaces, networks, name=source["name"], namespace=ns)
    obj["metadata"]["labels"] = {
        "vmID": vm_id or source["id"],
        "plan": "plan-uid-1",
        "migration": "migration-uid-1",
    }
    return obj


def _ns() -> str:
    return f"mig-{uuid.uuid4().hex[:10]}"


def _holder(webhook: Webhook, mac: str) -> tuple[str, str, str, str | None]:
    with webhook.database.session() as session:
        [a] = find_allocations(session, mac=mac, limit=5).items
        return (a.owner_kind, a.owner_name, a.scope.path, a.handover)


def test_the_migrated_vm_is_admitted_with_its_mac_and_the_mac_moves(
    client: requests.Session, webhook: Webhook, source: dict[str, Any]
) -> None:
    ns = _ns()
    obj = forklift_vm(ns, source)
    answer = admit(client, webhook, obj)
    assert answer.allowed, answer.message
    # The MAC is not rewritten: only the transaction stamp is patched in.
    assert {op["path"] for op in answer.patch} <= {"/metadata/annotations"}
    assert TRANSACTION_ANNOTATION in answer.patched["metadata"]["annotations"]  # type: ignore[index]
    assert _holder(webhook, source["macs"][0]) == (
        "vm",
        source["name"],
        f"/kubernetes/{ns}",
        "pending",
    )
    assert held(webhook, ns, source["name"])["default"][2] == "pending"
    with webhook.database.session() as session:
        event = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "allocation.handover")
            .where(AuditEvent.target == source["macs"][0])
        ).one()
        assert event.details["source_vm"] == {"name": source["name"], "id": source["id"]}
        assert event.details["plan"] == "plan-uid-1"
        assert event.details["migration"] == "migration-uid-1"


@pytest.mark.parametrize("vm_id", ["another-vm", None])
def test_without_the_right_vm_id_the_mac_is_refused_naming_the_ovirt_vm(
    client: requests.Session, webhook: Webhook, source: dict[str, Any], vm_id: str | None
) -> None:
    ns = _ns()
    obj = forklift_vm(ns, source, vm_id=vm_id or "x")
    if vm_id is None:
        del obj["metadata"]["labels"]
    answer = admit(client, webhook, obj)
    assert not answer.allowed and answer.code == 409
    assert answer.message.startswith(VM_CREATE_PREFIX + VM_ALLOCATE_PREFIX + REQUESTED_IN_USE)
    assert f"ovirt-vm {source['name']}" in answer.message
    assert _holder(webhook, source["macs"][0])[0] == "ovirt-vm"


def test_a_dry_run_hands_nothing_over(
    client: requests.Session, webhook: Webhook, source: dict[str, Any]
) -> None:
    answer = admit(client, webhook, forklift_vm(_ns(), source), dry_run=True)
    assert answer.allowed, answer.message
    assert _holder(webhook, source["macs"][0]) == ("ovirt-vm", source["name"], source["dc"], None)


def test_several_nics_move_nic_by_nic_and_an_update_adds_one(
    client: requests.Session, webhook: Webhook, source: dict[str, Any]
) -> None:
    ns = _ns()
    first = forklift_vm(ns, source)
    assert admit(client, webhook, first).allowed
    second = forklift_vm(ns, source, nics=2)
    answer = admit(client, webhook, second, operation="UPDATE", old=first)
    assert answer.allowed, answer.message
    for mac in source["macs"]:
        assert _holder(webhook, mac)[:3] == ("vm", source["name"], f"/kubernetes/{ns}")


def test_deleting_the_copy_before_final_gives_the_mac_back_and_after_final_frees_it(
    client: requests.Session, webhook: Webhook, source: dict[str, Any]
) -> None:
    ns = _ns()
    assert admit(client, webhook, forklift_vm(ns, source)).allowed
    with webhook.database.session(write=True) as session:
        scope = get_scope(session, f"/kubernetes/{ns}")
        release_owner(session, ACTOR, scope=scope, owner_kind="vm", owner_name=source["name"])
    assert _holder(webhook, source["macs"][0]) == ("ovirt-vm", source["name"], source["dc"], None)

    # Migrated again, this time completed: the oVirt owner is gone, a delete frees the MAC.
    assert admit(client, webhook, forklift_vm(ns, source)).allowed
    with webhook.database.session(write=True) as session:
        assert len(complete_handovers(session, ACTOR, plan="plan-uid-1")) >= 1
        scope = get_scope(session, f"/kubernetes/{ns}")
        release_owner(session, ACTOR, scope=scope, owner_kind="vm", owner_name=source["name"])
    with webhook.database.session() as session:
        assert find_allocations(session, mac=source["macs"][0]).total == 0
        still = session.scalars(
            select(Allocation).where(Allocation.owner_uid == source["id"])
        ).all()
        assert [a.interface for a in still] == ["nic2"], "the other NIC never moved"
