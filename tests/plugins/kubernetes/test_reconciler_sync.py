"""Initial sync and the watch-driven steps, through the real client against the stand-in."""
# ruff: noqa: F811 - the fixtures imported from reconciler_harness are parameters here

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import select

from manager.db import Allocation, AuditEvent, ClusterState, Database
from plugins.kubernetes.clusterstate import collision_report, is_synced
from plugins.kubernetes.reconciler import Reconciler
from tests.plugins.kubernetes.reconciler_harness import (  # noqa: F401 - fixtures
    admit,
    api_client,
    db,
    holdings,
    make_reconciler,
    pump_until,
    settings,
    standin,
)
from tests.plugins.kubernetes.standin import (
    NAMESPACES,
    PODS,
    VMS,
    StandInServer,
    namespace,
    pod,
    virtual_machine,
)

STAMP_1 = "2026-08-04T11:29:00.123456789Z"
STAMP_2 = "2026-08-04T11:30:00.000000001Z"
IGNORE_VMS = {"mutatevirtualmachines.kubemacpool.io": "ignore"}
ALLOCATE_PODS = {"mutatepods.kubemacpool.io": "allocate"}


def test_initial_sync_registers_managed_macs_and_marks_synced(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps", ALLOCATE_PODS))
    state.put(NAMESPACES, namespace("legacy", IGNORE_VMS))
    state.put(NAMESPACES, namespace("macpool"))
    state.put(VMS, virtual_machine("apps", "web", {"default": "02:00:00:00:10:01", "net": None}))
    state.put(VMS, virtual_machine("legacy", "old", {"default": "02:00:00:00:10:02"}))
    state.put(VMS, virtual_machine("macpool", "own", {"default": "02:00:00:00:10:03"}))
    state.put(PODS, pod("apps", "p1", {"blue": "02:00:00:00:20:01"}))
    state.put(PODS, pod("legacy", "p2", {"blue": "02:00:00:00:20:02"}))  # pods opt-in

    reconciler = make_reconciler()
    with db.session() as session:
        assert not is_synced(session, "/kubernetes")
    reconciler.sync()

    assert holdings(db) == {
        ("apps", "vm", "web", "default"): ("02:00:00:00:10:01", "allocated"),
        ("apps", "pod", "p1", "blue"): ("02:00:00:00:20:01", "allocated"),
    }
    with db.session() as session:
        assert is_synced(session, "/kubernetes")
        row = session.scalars(select(ClusterState)).one()
        assert row.holder == reconciler.identity
        assert set(row.data["resource_versions"]) == {"namespaces", "virtualmachines", "pods"}


def test_sync_counts_duplicates_instead_of_failing(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("a", ALLOCATE_PODS))
    state.put(NAMESPACES, namespace("b"))
    shared = "02:00:00:00:30:01"
    state.put(PODS, pod("a", "first", {"blue": shared}))
    state.put(VMS, virtual_machine("a", "second", {"default": shared}))
    state.put(VMS, virtual_machine("b", "third", {"default": shared, "other": "02:00:00:00:30:02"}))

    make_reconciler().sync()

    held = holdings(db)
    assert [key for key, (mac, _) in held.items() if mac == shared] == [
        ("a", "pod", "first", "blue")
    ]
    assert held[("b", "vm", "third", "other")] == ("02:00:00:00:30:02", "allocated")
    with db.session() as session:
        report = collision_report(session, scope_path="/kubernetes")
    assert report.duplicate_macs == 2
    assert report.collisions == {shared: ["pod/a/first", "vm/a/second", "vm/b/third"]}


def test_resync_is_idempotent_and_releases_objects_deleted_while_away(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    state.put(VMS, virtual_machine("apps", "keep", {"default": "02:00:00:00:40:01"}))
    state.put(VMS, virtual_machine("apps", "gone", {"default": "02:00:00:00:40:02"}))
    make_reconciler().sync()
    assert len(holdings(db)) == 2

    state.delete(VMS, "apps", "gone")
    in_flight = admit(db, namespace="apps", kind="vm", name="new", interface="default")
    make_reconciler().sync()

    assert holdings(db) == {
        ("apps", "vm", "keep", "default"): ("02:00:00:00:40:01", "allocated"),
        ("apps", "vm", "new", "default"): (in_flight, "pending"),  # creation still in flight
    }


def test_watch_confirms_pending_allocation_when_the_stamp_is_persisted(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    reconciler = make_reconciler()
    reconciler.sync()
    reconciler.start_watches()

    mac = admit(
        db, namespace="apps", kind="vm", name="web", interface="default", transaction=STAMP_2
    )
    # An older persisted stamp does not cover the newer admission: it stays pending.
    state.put(VMS, virtual_machine("apps", "web", {"default": mac}, stamp=STAMP_1))
    pump_until(reconciler, lambda: "web" in {k[1] for k in reconciler.objects["vm"]})
    assert holdings(db)[("apps", "vm", "web", "default")] == (mac, "pending")

    state.put(VMS, virtual_machine("apps", "web", {"default": mac}, stamp=STAMP_2))
    pump_until(
        reconciler, lambda: holdings(db)[("apps", "vm", "web", "default")] == (mac, "allocated")
    )


def test_watch_releases_removed_interfaces_and_deleted_objects(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps", ALLOCATE_PODS))
    macs = {"default": "02:00:00:00:50:01", "extra": "02:00:00:00:50:02"}
    state.put(VMS, virtual_machine("apps", "web", macs, stamp=STAMP_1))
    state.put(PODS, pod("apps", "p", {"blue": "02:00:00:00:50:03"}))
    reconciler = make_reconciler()
    reconciler.sync()
    reconciler.start_watches()
    assert len(holdings(db)) == 3

    # A persisted UPDATE without "extra" releases it; "default" stays.
    state.put(VMS, virtual_machine("apps", "web", {"default": macs["default"]}, stamp=STAMP_2))
    pump_until(reconciler, lambda: ("apps", "vm", "web", "extra") not in holdings(db))
    assert holdings(db)[("apps", "vm", "web", "default")] == (macs["default"], "allocated")

    state.delete(VMS, "apps", "web")
    state.delete(PODS, "apps", "p")
    pump_until(reconciler, lambda: holdings(db) == {})


def test_generate_name_placeholder_is_rekeyed_to_the_real_name(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    reconciler = make_reconciler()
    reconciler.sync()
    reconciler.start_watches()
    placeholder = "web-{admission:8d1f}"
    mac = admit(
        db, namespace="apps", kind="vm", name=placeholder, interface="default", transaction=STAMP_1
    )
    other = admit(
        db,
        namespace="apps",
        kind="vm",
        name="web-{admission:9e2a}",
        interface="default",
        transaction=STAMP_1,
    )

    vm = virtual_machine("apps", "web-x7k2p", {"default": mac}, stamp=STAMP_1, generate_name="web-")
    stored = state.put(VMS, vm)
    pump_until(reconciler, lambda: ("apps", "vm", "web-x7k2p", "default") in holdings(db))

    held = holdings(db)
    assert held[("apps", "vm", "web-x7k2p", "default")] == (mac, "allocated")
    assert ("apps", "vm", placeholder, "default") not in held
    # The other request's placeholder is not this VM's: it waits for its own object or expiry.
    assert held[("apps", "vm", "web-{admission:9e2a}", "default")] == (other, "pending")
    with db.session() as session:
        row = session.scalars(select(Allocation).where(Allocation.owner_name == "web-x7k2p")).one()
        assert row.owner_uid == stored["metadata"]["uid"]


HOME = {"v1": "apps", "v2": "apps", "v3": "more", "v4": "more", "v5": "more"}
TWO = "02:00:00:00:50:09"


def test_sync_registers_in_batches_and_redoes_a_refused_batch_owner_by_owner(
    standin: StandInServer,
    db: Database,
    make_reconciler: Callable[..., Reconciler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Batches of fresh owners are registered set-wise; one collision only costs its batch the
    fast path: its other owners are still registered, the collision is reported."""
    # Listed (in creation order) v1 v2 | v3 v4 | v5, two per batch: v4 carries v1's MAC.
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    state.put(NAMESPACES, namespace("more"))
    macs = {name: f"02:00:00:00:50:0{i}" for i, name in enumerate(["v1", "v2", "v3", "v5"], 1)}
    for name in HOME:
        interfaces = {"nic": macs[name]} if name != "v4" else {"nic": macs["v1"], "two": TWO}
        state.put(VMS, virtual_machine(HOME[name], name, interfaces))

    with caplog.at_level(logging.DEBUG, logger="plugins.kubernetes.reconciler"):
        make_reconciler(batch_size=2).sync()
    redone = [r for r in caplog.records if "aligning one by one" in r.getMessage()]
    assert len(redone) == 1 and "vm 'v4'" in redone[0].getMessage()

    held = holdings(db)
    expected = {(HOME[name], "vm", name, "nic"): (mac, "allocated") for name, mac in macs.items()}
    expected[("more", "vm", "v4", "two")] = (TWO, "allocated")
    assert held == expected
    with db.session() as session:
        report = collision_report(session, scope_path="/kubernetes")
    assert report.collisions == {macs["v1"]: ["vm/apps/v1", "vm/more/v4"]}
    with db.session() as session:
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "allocation.create")
        ).all()
    assert len(actors) == 5 and len(set(actors)) == 1  # one event per registered MAC


def test_a_reconciler_process_freezes_what_its_sync_built(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, virtual_machine("apps", "web", {"default": "02:00:00:00:10:01"}))
    embedded = make_reconciler()
    before = gc.get_freeze_count()
    embedded.sync()
    assert gc.get_freeze_count() == before  # a library caller's heap is left alone
    own_process = make_reconciler(freeze=True)
    try:
        own_process.sync()
        assert gc.get_freeze_count() > before
        # What the sync observed now lives outside the collector's generations.
        assert all(o is not own_process.objects for o in gc.get_objects())
    finally:
        gc.unfreeze()
