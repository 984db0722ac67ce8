"""The reconciler against a real API server: initial sync, restarts, 410 Gone, Lease take-over."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from sqlalchemy import text

from manager.db import Base, Database
from plugins.kubernetes.lease import LEASE_NAME
from plugins.kubernetes.scoping import POD_WEBHOOK
from tests.conftest import POSTGRES_URL
from tests.kube.conftest import Cluster
from tests.kube.controlplane import ControlPlane
from tests.kube.macpool import NAMESPACE, MacPoolProcess, wait_for
from tests.kube.objects import MASQUERADE, allocated, holdings, pod, vm, vm_macs
from tests.kube.proxy import Relay

pytestmark = pytest.mark.kube


def _confirmed(database: Any, namespace: str, name: str, macs: dict[str, str]) -> None:
    want = {iface: mac.lower() for iface, mac in macs.items()}
    wait_for(lambda: allocated(database, namespace, name) == want, what=f"{name} confirmed")


def _admitted(database: Any, namespace: str, name: str) -> None:
    """``name`` was admitted and is held pending. An answer given from the reserve is written by
    the recorder shortly after the review (within a second), so this waits a few seconds."""
    wait_for(
        lambda: (
            {state for _mac, state in holdings(database, namespace, name).values()} == {"pending"}
        ),
        timeout=5,
        what=f"{name} held pending",
    )


def test_initial_sync_then_a_restart_catches_up(cluster: Cluster, macpool_factory: Any) -> None:
    ns = cluster.namespace
    # Created before MacPool ever ran (no webhook registered): MACs given by their users.
    early = cluster.create_vm(
        vm("early", ns, interfaces=[{**MASQUERADE, "macAddress": "02:5e:00:00:00:01"}])
    )
    opted = cluster.create_namespace(f"{ns}-pods", {POD_WEBHOOK: "allocate"})
    networks = [{"name": "br1", "mac": "02:5e:00:00:00:02"}]
    cluster.core.create_namespaced_pod(opted, pod("early-pod", opted, networks))
    macpool: MacPoolProcess = macpool_factory()
    macpool.start().wait_ready()
    database = macpool.database()
    # /readyz said ready only after the initial sync registered them.
    assert allocated(database, ns, "early") == vm_macs(early)
    assert allocated(database, opted, "early-pod", kind="pod") == {"br1": "02:5e:00:00:00:02"}
    macpool.deployment.register_webhook(macpool.webhook_port)
    kept = cluster.create_vm(vm("kept", ns))
    _confirmed(database, ns, "kept", vm_macs(kept))

    macpool.stop()  # while MacPool is down, a VM and a pod go away
    cluster.delete_vm("early")
    cluster.core.delete_namespaced_pod("early-pod", opted)
    macpool.start().wait_ready()
    wait_for(lambda: not holdings(database, ns, "early"), what="early released")
    wait_for(lambda: not holdings(database, opted, kind="pod"), what="early-pod released")
    assert allocated(database, ns, "kept") == vm_macs(kept)
    # ... and the watches run again: a new VM is confirmed, a deleted one released.
    after = cluster.create_vm(vm("after", ns))
    _confirmed(database, ns, "after", vm_macs(after))
    cluster.delete_vm("kept")
    wait_for(lambda: not holdings(database, ns, "kept"), what="kept released")
    database.dispose()


def test_a_watch_resumed_after_410_gone_relists(
    cluster: Cluster, control_plane: ControlPlane, macpool_factory: Any
) -> None:
    """MacPool loses the API server for a moment; meanwhile a VM is deleted, one is created,
    and etcd is compacted: resuming the watch gets 410 Gone, and a relist catches up."""
    ns = cluster.namespace
    with Relay(("127.0.0.1", control_plane.api_port)) as relay:
        macpool: MacPoolProcess = macpool_factory(api_server=f"https://127.0.0.1:{relay.port}")
        macpool.start().wait_ready()
        macpool.deployment.register_webhook(macpool.webhook_port)
        database = macpool.database()
        gone = cluster.create_vm(vm("gone", ns))
        _confirmed(database, ns, "gone", vm_macs(gone))

        relay.cut()
        cluster.delete_vm("gone")
        # The API server still reaches the webhook directly: the new VM is admitted (pending).
        born = cluster.create_vm(vm("born", ns))
        _admitted(database, ns, "born")
        control_plane.compact_etcd()
        time.sleep(1.5)  # the watches retry (and fail) meanwhile
        relay.restore()

        wait_for(lambda: not holdings(database, ns, "gone"), what="gone released")
        _confirmed(database, ns, "born", vm_macs(born))
        assert "watch of virtualmachines expired (410 Gone): relisting" in macpool.log()
        database.dispose()


def _holder(api: client.ApiClient) -> str:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, NAMESPACE)
    return str(lease.spec.holder_identity or "")


def _holder_pid(api: client.ApiClient) -> int | None:
    """The process id in the holder identity (``host-pid-random``)."""
    parts = _holder(api).rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _shared_database_url() -> str:
    """PostgreSQL when the suite has one (what replicas share), emptied first; else ""."""
    if not POSTGRES_URL:
        return ""
    database = Database(POSTGRES_URL)
    with database.engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    database.dispose()
    return POSTGRES_URL


def test_the_lease_is_taken_over_when_the_leader_is_killed(
    cluster: Cluster, admin_api: client.ApiClient, macpool_factory: Any
) -> None:
    """Two replicas on one database (PostgreSQL when the suite has one, else one SQLite file)."""
    first: MacPoolProcess = macpool_factory("first", database_url=_shared_database_url())
    first.start().wait_ready()
    second: MacPoolProcess = macpool_factory("second", database_url=first.database_url)
    second.start().wait_ready()  # ready: its listener is up and the cluster is synced
    wait_for(lambda: _holder_pid(admin_api) in first.pids(), what="first leads")
    transitions = (
        client.CoordinationV1Api(admin_api)
        .read_namespaced_lease(LEASE_NAME, NAMESPACE)
        .spec.lease_transitions
    )

    first.kill()  # kill -9: no Lease release, no clean shutdown
    # The Service would now route every review to the second replica.
    second.deployment.register_webhook(second.webhook_port)
    created = cluster.create_vm(vm("orphan", cluster.namespace))
    database = second.database()
    _admitted(database, cluster.namespace, "orphan")
    # Once the Lease expires (15 s), the second reconciler takes it and confirms the VM.
    wait_for(lambda: _holder_pid(admin_api) in second.pids(), timeout=40, what="take-over")
    lease = client.CoordinationV1Api(admin_api).read_namespaced_lease(LEASE_NAME, NAMESPACE)
    assert lease.spec.lease_transitions == (transitions or 0) + 1
    _confirmed(database, cluster.namespace, "orphan", vm_macs(created))
    database.dispose()
