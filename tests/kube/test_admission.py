"""The webhook through a real API server: what users see when they create VMs and Pods.

One MacPool (``macpool serve`` with the webhook and the reconciler) serves the whole module; the
MutatingWebhookConfiguration is the rendered one, pointed at its loopback port.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from plugins.kubernetes.admission import REQUESTED_IN_USE
from plugins.kubernetes.patches import TRANSACTION_ANNOTATION
from plugins.kubernetes.scoping import POD_WEBHOOK, VM_WEBHOOK
from tests.kube.conftest import Cluster
from tests.kube.macpool import Deployment, MacPoolProcess, running, wait_for
from tests.kube.objects import (
    MASQUERADE,
    allocated,
    holdings,
    interfaces,
    pod,
    pod_networks,
    vm,
    vm_macs,
)

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def macpool(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MacPoolProcess]:
    process = MacPoolProcess(deployment, tmp_path_factory.mktemp("macpool"))
    with running(process):
        yield process


def _random_mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def test_vm_create_update_and_delete(cluster: Cluster, macpool: MacPoolProcess) -> None:
    ns = cluster.namespace
    created = cluster.create_vm(vm("web", ns))
    macs = vm_macs(created)
    assert set(macs) == {"default", "br1"}  # masquerade and Multus both get a MAC
    assert len(set(macs.values())) == 2
    assert TRANSACTION_ANNOTATION in created["metadata"]["annotations"]
    database = macpool.database()
    # The reconciler sees the persisted VM and confirms its pending allocations.
    wait_for(lambda: allocated(database, ns, "web") == macs, what="allocations confirmed")

    # Update: drop br1, add br2 (no MAC given): default keeps its MAC, br2 gets a new one.
    current = cluster.get_vm("web")
    nics = [i for i in interfaces(current) if i["name"] == "default"]
    nics.append({"name": "br2", "bridge": {}})
    current["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = nics
    current["spec"]["template"]["spec"]["networks"] = [
        {"name": "default", "pod": {}},
        {"name": "br2", "multus": {"networkName": "br2"}},
    ]
    updated = cluster.replace_vm(current)
    new_macs = vm_macs(updated)
    assert new_macs["default"] == macs["default"]
    assert set(new_macs) == {"default", "br2"}
    assert new_macs["br2"] not in macs.values()
    wait_for(lambda: allocated(database, ns, "web") == new_macs, what="update reconciled")

    cluster.delete_vm("web")
    wait_for(lambda: not holdings(database, ns, "web"), what="MACs released after delete")
    database.dispose()


def test_requested_mac_is_kept_and_a_held_one_refused(
    cluster: Cluster, macpool: MacPoolProcess
) -> None:
    ns = cluster.namespace
    mac = _random_mac()
    body = vm("first", ns, interfaces=[{**MASQUERADE, "macAddress": mac.upper()}])
    assert vm_macs(cluster.create_vm(body)) == {"default": mac.upper()}
    database = macpool.database()
    wait_for(lambda: allocated(database, ns, "first") == {"default": mac}, what="confirmed")

    with pytest.raises(ApiException) as refused:
        cluster.create_vm(vm("second", ns, interfaces=[{**MASQUERADE, "macAddress": mac}]))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 409  # the webhook's status.code, as kubectl shows it
    assert f'admission webhook "{VM_WEBHOOK}" denied the request' in message
    assert f"{REQUESTED_IN_USE}: {mac} is held by " in message  # KubeMacPool's words first
    assert "first" in message  # then MacPool's: the holder
    assert [v["metadata"]["name"] for v in cluster.list_vms()] == ["first"]
    assert not holdings(database, ns, "second")
    database.dispose()


def test_namespace_labels_opt_vms_out_and_pods_in(
    cluster: Cluster, macpool: MacPoolProcess
) -> None:
    ignored = cluster.create_namespace(f"{cluster.namespace}-out", {VM_WEBHOOK: "ignore"})
    created = cluster.create_vm(vm("plain", ignored))
    assert vm_macs(created) == {}
    assert TRANSACTION_ANNOTATION not in (created["metadata"].get("annotations") or {})

    networks = [{"name": "br1", "namespace": "", "interface": "net1"}]
    # Pods are opt-in: untouched without the label ...
    untouched = cluster.core.create_namespaced_pod(
        cluster.namespace, pod("p0", cluster.namespace, networks)
    )
    assert pod_networks(untouched) == networks
    # ... given MACs with it, keeping every other key of each element.
    opted = cluster.create_namespace(f"{cluster.namespace}-in", {POD_WEBHOOK: "allocate"})
    created_pod = cluster.core.create_namespaced_pod(opted, pod("p1", opted, networks))
    (element,) = pod_networks(created_pod)
    assert element["name"] == "br1" and element["interface"] == "net1"
    database = macpool.database()
    wait_for(
        lambda: allocated(database, opted, "p1", kind="pod") == {"net1": element["mac"]},
        what="the pod's MAC confirmed",
    )
    assert not holdings(database, ignored)
    assert not holdings(database, cluster.namespace, kind="pod")
    cluster.core.delete_namespaced_pod("p1", opted)  # never scheduled: gone at once
    wait_for(lambda: not holdings(database, opted, kind="pod"), what="the pod's MAC released")
    database.dispose()


def test_a_pod_without_the_annotation_is_left_alone(
    cluster: Cluster, macpool: MacPoolProcess
) -> None:
    opted = cluster.create_namespace(f"{cluster.namespace}-in", {POD_WEBHOOK: "allocate"})
    created = cluster.core.create_namespaced_pod(opted, pod("bare", opted, None))
    assert not (created.metadata.annotations or {})


def test_dry_run_answers_the_same_and_changes_nothing(
    cluster: Cluster, macpool: MacPoolProcess
) -> None:
    ns = cluster.namespace
    preview: dict[str, Any] = cluster.create_vm(vm("dry", ns), dry_run="All")
    assert set(vm_macs(preview)) == {"default", "br1"}
    database = macpool.database()
    time.sleep(1.0)  # let any (wrong) write of the webhook or the reconciler land
    assert cluster.list_vms() == []
    assert holdings(database, ns) == {}
    # A real create afterwards works as if the dry run never happened.
    assert set(vm_macs(cluster.create_vm(vm("dry", ns)))) == {"default", "br1"}
    database.dispose()


def test_bridge_on_the_pod_network_gets_no_mac(cluster: Cluster, macpool: MacPoolProcess) -> None:
    created = cluster.create_vm(
        vm("bridged", cluster.namespace, interfaces=[{"name": "default", "bridge": {}}])
    )
    assert vm_macs(created) == {}
