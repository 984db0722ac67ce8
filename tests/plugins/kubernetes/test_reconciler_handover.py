"""The reconciler and migrations: a cluster that already holds migrated VMs (vmID labels, MACs
held by imported oVirt VMs) is reconciled as hand-overs, never reported as collisions; a VM
that has run makes its hand-overs final; a deleted copy gives the MAC back."""
# ruff: noqa: F811 - the fixtures imported from reconciler_harness are parameters here

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from manager.core.actor import Actor, Owner
from manager.db import Allocation, Database
from manager.services import allocate_mac, create_scope
from plugins.kubernetes.clusterstate import collision_report
from plugins.kubernetes.reconciler import Reconciler
from tests.plugins.kubernetes.reconciler_harness import (  # noqa: F401 - fixtures
    admit,
    api_client,
    db,
    holdings,
    make_reconciler,
    settings,
    standin,
)
from tests.plugins.kubernetes.standin import (
    NAMESPACES,
    VMS,
    StandInServer,
    namespace,
    virtual_machine,
)

OVIRT_ID = "0b4c6f7e-2222-4c53-9d8a-0f7d1c2b9e11"
MAC = "02:00:00:00:50:01"


def _imported(db: Database) -> None:
    with db.session(write=True) as s:
        create_scope(s, Actor("import"), kind="datacenter", name="dc1")
        allocate_mac(
            s,
            Actor("import"),
            scope="/dc1",
            owner=Owner("ovirt-vm", "legacy", OVIRT_ID),
            interface="nic1",
            mac=MAC,
        )


def _migrated(*, ready: bool = False, vm_id: str = OVIRT_ID) -> dict[str, Any]:
    obj = virtual_machine("apps", "legacy", {"default": MAC})
    obj["metadata"]["labels"] = {"vmID": vm_id, "plan": "plan-9", "migration": "mig-9"}
    if ready:
        obj["status"] = {"ready": True, "printableStatus": "Running"}
    return obj


def _row(db: Database) -> Allocation:
    with db.session() as s:
        row = s.scalars(select(Allocation)).one()
        s.expunge(row)
        return row


def test_migrated_vms_found_by_the_sync_are_hand_overs_not_collisions(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    _imported(db)
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, _migrated())
    make_reconciler().sync()
    assert holdings(db) == {("apps", "vm", "legacy", "default"): (MAC, "allocated")}
    assert _row(db).handover == "pending"
    with db.session() as session:
        report = collision_report(session, scope_path="/kubernetes")
    assert (report.duplicate_macs, report.collisions) == (0, {})


def test_a_vm_with_another_vm_id_is_a_collision(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    _imported(db)
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, _migrated(vm_id="someone-else"))
    make_reconciler().sync()
    assert holdings(db) == {}
    assert _row(db).owner_kind == "ovirt-vm"
    with db.session() as session:
        report = collision_report(session, scope_path="/kubernetes")
    assert report.collisions == {MAC: ["ovirt-vm//dc1/legacy", "vm/apps/legacy"]}


def test_a_migrated_vm_that_ran_makes_the_hand_over_final(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    _imported(db)
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, _migrated(ready=True))
    make_reconciler().sync()
    row = _row(db)
    assert (row.owner_kind, row.handover) == ("vm", "final")
    assert row.source is not None and row.source["plan"] == "plan-9"


def test_the_reconciler_records_a_kubevirt_vms_uid_for_later_moves(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Admission sees no UID yet (the API server assigns it); the reconciler records it, so a
    later OCP-to-OCP migration (vmID = that UID) can take the VM's MACs."""
    mac = admit(db, namespace="apps", kind="vm", name="web", interface="default", mac=MAC)
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, virtual_machine("apps", "web", {"default": mac}))
    make_reconciler().sync()
    stored = standin.state.get(VMS, "apps", "web")
    assert stored is not None
    uid = stored["metadata"]["uid"]
    row = _row(db)
    assert (row.owner_name, row.owner_uid) == ("web", uid)
