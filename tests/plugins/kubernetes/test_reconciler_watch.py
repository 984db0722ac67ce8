"""Expiry, 410 Gone, resume, namespace opt modes, and the Lease: through the real client."""
# ruff: noqa: F811 - the fixtures imported from reconciler_harness are parameters here

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import urllib3
from kubernetes.client import ApiClient, Configuration, CoordinationV1Api

from manager.config import Settings
from manager.db import Database
from manager.services import release_owner
from plugins.kubernetes.clusterstate import is_synced
from plugins.kubernetes.lease import LeaseElector
from plugins.kubernetes.reconciler import ACTOR, Reconciler
from tests.plugins.kubernetes.reconciler_harness import (  # noqa: F401 - fixtures
    admit,
    api_client,
    db,
    holdings,
    make_reconciler,
    pump_until,
    settings,
    standin,
    wait_until,
)
from tests.plugins.kubernetes.standin import (
    NAMESPACES,
    VMS,
    StandInServer,
    namespace,
    virtual_machine,
)

STAMP = "2026-08-04T11:29:00.123456789Z"
LATER = "2026-08-04T11:35:00Z"


def test_expiry_releases_stale_pending_and_realigns_existing_vm(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    state.put(VMS, virtual_machine("apps", "web", {"default": "02:00:00:00:60:01"}, stamp=STAMP))
    reconciler = make_reconciler()
    reconciler.sync()
    # A rejected CREATE (never persisted) and a rejected UPDATE that moved web's MAC.
    lost = admit(
        db,
        namespace="apps",
        kind="vm",
        name="lost",
        interface="default",
        transaction=LATER,
        ttl_seconds=60,
        age_seconds=120,
    )
    with db.session(write=True) as session:
        release_owner(session, ACTOR, scope="/kubernetes/apps", owner_kind="vm", owner_name="web")
    moved = admit(
        db,
        namespace="apps",
        kind="vm",
        name="web",
        interface="default",
        transaction=LATER,
        ttl_seconds=60,
        age_seconds=120,
    )
    fresh = admit(
        db, namespace="apps", kind="vm", name="fresh", interface="default", transaction=LATER
    )
    assert holdings(db)[("apps", "vm", "lost", "default")] == (lost, "pending")

    assert reconciler.expire() == 2

    assert holdings(db) == {
        # web's persisted MAC is back: the stored VM is the truth once the update is given up.
        ("apps", "vm", "web", "default"): ("02:00:00:00:60:01", "allocated"),
        ("apps", "vm", "fresh", "default"): (fresh, "pending"),
    }
    assert moved != "02:00:00:00:60:01"


@pytest.mark.parametrize("gone_mode", ["event", "status"])
def test_410_gone_relists_and_catches_up(
    gone_mode: str,
    standin: StandInServer,
    db: Database,
    make_reconciler: Callable[..., Reconciler],
) -> None:
    state = standin.state
    state.gone_mode = gone_mode
    state.put(NAMESPACES, namespace("apps"))
    state.put(VMS, virtual_machine("apps", "a", {"default": "02:00:00:00:70:01"}))
    state.put(VMS, virtual_machine("apps", "b", {"default": "02:00:00:00:70:02"}))
    reconciler = make_reconciler(watch_timeout=1)
    reconciler.sync()
    reconciler.start_watches()
    lists_before = len(
        [
            r
            for r in state.requests
            if r[1].endswith("virtualmachines") and r[2].get("watch") != "true"
        ]
    )

    # Changes the watch never delivers, then the history is compacted away.
    reconciler.stop_watches()
    state.delete(VMS, "apps", "a")
    state.put(VMS, virtual_machine("apps", "c", {"default": "02:00:00:00:70:03"}))
    state.compact()
    reconciler.start_watches()

    pump_until(
        reconciler,
        lambda: (
            set(holdings(db)) == {("apps", "vm", "b", "default"), ("apps", "vm", "c", "default")}
        ),
    )
    lists_after = len(
        [
            r
            for r in state.requests
            if r[1].endswith("virtualmachines") and r[2].get("watch") != "true"
        ]
    )
    assert lists_after == lists_before + 1  # relisted once, the other resources were not


def test_watch_resumes_from_the_last_resource_version(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    reconciler = make_reconciler(watch_timeout=1)
    reconciler.sync()
    reconciler.start_watches()
    state.put(VMS, virtual_machine("apps", "a", {"default": "02:00:00:00:80:01"}))
    pump_until(reconciler, lambda: ("apps", "vm", "a", "default") in holdings(db))
    seen = state.objects[VMS][("apps", "a")].obj["metadata"]["resourceVersion"]
    # Streams end every second; the next one must start where the last left off.
    wait_until(lambda: any(q.get("resourceVersion") == seen for q in state.watch_requests(VMS)))
    state.put(VMS, virtual_machine("apps", "b", {"default": "02:00:00:00:80:02"}))
    pump_until(reconciler, lambda: ("apps", "vm", "b", "default") in holdings(db))
    versions = [int(q["resourceVersion"]) for q in state.watch_requests(VMS)]
    assert versions == sorted(versions)


def test_opt_out_namespace_is_ignored_until_it_opts_back_in(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    state = standin.state
    ignore = {"mutatevirtualmachines.kubemacpool.io": "ignore"}
    state.put(NAMESPACES, namespace("legacy", ignore))
    state.put(NAMESPACES, namespace("kube-system", {"openshift.io/run-level": "0"}))
    state.put(VMS, virtual_machine("legacy", "old", {"default": "02:00:00:00:90:01"}))
    reconciler = make_reconciler()
    reconciler.sync()
    reconciler.start_watches()
    state.put(VMS, virtual_machine("legacy", "new", {"default": "02:00:00:00:90:02"}))
    state.put(VMS, virtual_machine("kube-system", "sys", {"default": "02:00:00:00:90:03"}))
    pump_until(reconciler, lambda: len(reconciler.objects["vm"]) == 3)
    assert holdings(db) == {}

    state.put(NAMESPACES, namespace("legacy"))  # the ignore label is removed
    pump_until(reconciler, lambda: len(holdings(db)) == 2)
    assert set(holdings(db)) == {
        ("legacy", "vm", "old", "default"),
        ("legacy", "vm", "new", "default"),
    }


def test_lease_lets_only_one_reconciler_act(
    standin: StandInServer, db: Database, settings: Settings, api_client: ApiClient
) -> None:
    state = standin.state
    state.put(NAMESPACES, namespace("apps"))
    state.put(VMS, virtual_machine("apps", "a", {"default": "02:00:00:00:a0:01"}))
    first = Reconciler(db, settings, api_client, identity="first", watch_timeout=1)
    second = Reconciler(db, settings, api_client, identity="second", watch_timeout=1)
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=r.run, args=(stop,), daemon=True)
        for r, stop in zip((first, second), stops, strict=True)
    ]
    try:
        threads[0].start()
        wait_until(lambda: first.synced)
        threads[1].start()
        state.put(VMS, virtual_machine("apps", "b", {"default": "02:00:00:00:a0:02"}))
        wait_until(lambda: len(holdings(db)) == 2)
        lease = state.get("leases", "macpool", "macpool-reconciler")
        assert lease is not None and lease["spec"]["holderIdentity"] == "first"
        assert not second.synced and second.watchers == {}

        stops[0].set()  # the holder leaves and gives the Lease up; the other takes over
        threads[0].join(timeout=10)
        wait_until(lambda: second.synced, timeout=15)
        lease = state.get("leases", "macpool", "macpool-reconciler")
        assert lease is not None and lease["spec"]["holderIdentity"] == "second"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(timeout=10)
    with db.session() as session:
        assert is_synced(session, "/kubernetes")


def test_lease_is_taken_over_only_after_it_expires(api_client: ApiClient) -> None:
    now = [datetime(2026, 8, 4, 12, 0, tzinfo=UTC)]
    api = CoordinationV1Api(api_client)

    def elector(identity: str) -> LeaseElector:
        return LeaseElector(
            api, namespace="macpool", identity=identity, duration_seconds=15, clock=lambda: now[0]
        )

    first, second = elector("first"), elector("second")
    assert first.try_acquire()
    assert not second.try_acquire()
    now[0] += timedelta(seconds=10)
    assert first.try_acquire()  # renewed
    now[0] += timedelta(seconds=14)
    assert not second.try_acquire()  # 14 s after the renewal: still held
    now[0] += timedelta(seconds=2)
    assert second.try_acquire()  # expired: taken over
    assert not first.try_acquire()


def test_events_that_follow_within_the_gather_window_share_one_batch(
    make_reconciler: Callable[..., Reconciler],
) -> None:
    """A VM's confirmation waits for nobody, so the reconciler gathers what follows a first
    event for a moment: one transaction for many VMs instead of one each."""
    from plugins.kubernetes.sources import WatchEvent

    def event(name: str) -> WatchEvent:
        return WatchEvent(NAMESPACES, "ADDED", namespace(name))

    def later(reconciler: Reconciler, name: str, delay: float) -> threading.Timer:
        timer = threading.Timer(delay, lambda: reconciler.queue.put(event(name)))
        timer.start()
        return timer

    gathering = make_reconciler(gather=0.5)
    gathering.queue.put(event("first"))
    timer = later(gathering, "second", 0.1)
    assert gathering.pump(timeout=1) == 2
    timer.join()
    assert {"first", "second"} <= set(gathering.namespaces)

    at_once = make_reconciler(gather=0.0)
    at_once.queue.put(event("first"))
    timer = later(at_once, "second", 0.2)
    assert at_once.pump(timeout=1) == 1
    timer.join()
    assert at_once.pump(timeout=1) == 1


def test_a_lease_call_to_a_hung_api_server_fails_instead_of_waiting_forever() -> None:
    # Accepts connections, never answers: a partition that leaves the TCP connection up.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    configuration = Configuration(host=f"http://127.0.0.1:{server.getsockname()[1]}")
    configuration.retries = 0
    elector = LeaseElector(
        CoordinationV1Api(ApiClient(configuration)),
        namespace="macpool",
        identity="stuck",
        request_timeout=(1.0, 1.0),
    )
    started = time.monotonic()
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):
            elector.try_acquire()
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
