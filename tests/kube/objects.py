"""VirtualMachines and Pods as a user would create them, and what MacPool's database holds."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from manager.core.mac import format_mac_int
from manager.db import Allocation, Database, Scope

CLUSTER_SCOPE = "/kubernetes"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
POD_NET = {"name": "default", "pod": {}}
MULTUS_NET = {"name": "br1", "multus": {"networkName": "br1"}}
MASQUERADE = {"name": "default", "masquerade": {}}
BRIDGE = {"name": "br1", "bridge": {}}


def vm(
    name: str, namespace: str, *, interfaces: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A VM with a masquerade pod interface and a Multus bridge unless told otherwise."""
    nics = [dict(i) for i in (interfaces if interfaces is not None else [MASQUERADE, BRIDGE])]
    networks = [POD_NET if nic["name"] == "default" else {**MULTUS_NET, "name": nic["name"]}
                for nic in nics]  # fmt: skip
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {"devices": {"interfaces": nics}},
                    "networks": networks,
                },
            },
        },
    }


def interfaces(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"])


def vm_macs(obj: dict[str, Any]) -> dict[str, str]:
    """Interface name -> MAC the persisted VM carries."""
    return {i["name"]: i["macAddress"] for i in interfaces(obj) if i.get("macAddress")}


def pod(name: str, namespace: str, networks: list[dict[str, Any]] | None) -> dict[str, Any]:
    annotations = {} if networks is None else {NETWORKS_ANNOTATION: json.dumps(networks)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def pod_networks(obj: Any) -> list[dict[str, Any]]:
    annotations = obj.metadata.annotations or {}
    return list(json.loads(annotations[NETWORKS_ANNOTATION]))


def holdings(
    database: Database, namespace: str, name: str | None = None, *, kind: str = "vm"
) -> dict[tuple[str, str], tuple[str, str]]:
    """(owner name, interface) -> (MAC, state) held in the namespace's scope."""
    query = (
        select(Allocation)
        .join(Scope, Allocation.scope_id == Scope.id)
        .where(Scope.path == f"{CLUSTER_SCOPE}/{namespace}", Allocation.owner_kind == kind)
    )
    if name is not None:
        query = query.where(Allocation.owner_name == name)
    with database.session() as session:
        rows = session.scalars(query).all()
        return {(r.owner_name, r.interface): (format_mac_int(r.mac), r.state) for r in rows}


def allocated(database: Database, namespace: str, name: str, *, kind: str = "vm") -> dict[str, str]:
    """Interface -> MAC of ``name``'s confirmed (``allocated``) allocations."""
    held = holdings(database, namespace, name, kind=kind)
    return {iface: mac for (_, iface), (mac, state) in held.items() if state == "allocated"}
