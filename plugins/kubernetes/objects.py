"""What the reconciler needs to know of a VirtualMachine or Pod, read from its raw JSON.

An :class:`Observed` is small on purpose: the reconciler keeps one per object of the cluster in
memory (10^5 VMs must fit comfortably), and compares it with the allocations in the database.
Malformed parts of an object (a MAC that does not parse, a broken Multus annotation) are left
out rather than failing the whole object: the API server already accepted it, and refusing to
look at it would only hide its other MACs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from manager.core.errors import InvalidMac
from manager.core.mac import parse_assignable_mac
from plugins.kubernetes.broker import (
    FORKLIFT_LABELS,
    OWNER_POD,
    OWNER_VM,
    MigrationLabels,
    MigrationSource,
    migration_source,
)
from plugins.kubernetes.multus import (
    NetworkAnnotationError,
    interface_keys,
    is_json_list_form,
    is_kubevirt_launcher,
    parse_network_selection,
)
from plugins.kubernetes.patches import (
    MULTUS_NETWORKS_ANNOTATION,
    TRANSACTION_ANNOTATION,
    parse_transaction_timestamp,
)

#: Suffix marker of a placeholder owner name given at admission to a ``generateName`` object.
PLACEHOLDER_MARK = "{admission:"


@dataclass(frozen=True, slots=True)
class Observed:
    """One persisted object as last seen: identity, transaction stamp, interface → MAC."""

    kind: str
    namespace: str
    name: str
    uid: str | None = None
    generate_name: str = ""
    #: The ``kubemacpool.io/transaction-timestamp`` annotation, as text and in nanoseconds.
    stamp: str | None = None
    stamp_ns: int | None = None
    #: Interface (or Multus element key) → MAC as an integer.
    macs: Mapping[str, int] = field(default_factory=dict)
    #: Set when the object carries a deletionTimestamp: its MACs are released at once.
    deleting: bool = False
    #: Interfaces whose MAC could not be read (reported, never registered).
    invalid: tuple[str, ...] = ()
    #: A VM migrated from another (its ``vmID`` label): it may hold that VM's MACs.
    migrated_from: MigrationSource | None = None
    #: A VM that has run (``status.ready``): its migration hand-overs are final.
    ready: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): the object's identity within its kind."""
        return (self.namespace, self.name)

    def describe(self) -> str:
        """KubeMacPool's object key, e.g. ``vm/ns/name``."""
        return f"{self.kind}/{self.namespace}/{self.name}"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = _mapping(obj.get("metadata"))
    uid = metadata.get("uid")
    return {
        "namespace": str(metadata.get("namespace") or ""),
        "name": str(metadata.get("name") or ""),
        "uid": str(uid) if uid else None,
        "generate_name": str(metadata.get("generateName") or ""),
        "deleting": bool(metadata.get("deletionTimestamp")),
    }


def _read_macs(pairs: list[tuple[str, object]]) -> tuple[dict[str, int], tuple[str, ...]]:
    macs: dict[str, int] = {}
    invalid: list[str] = []
    for interface, value in pairs:
        if value in (None, ""):
            continue
        try:
            macs[interface] = parse_assignable_mac(value).value
        except InvalidMac:
            invalid.append(interface)
    return macs, tuple(invalid)


def observe_vm(obj: Mapping[str, Any], *, labels: MigrationLabels = FORKLIFT_LABELS) -> Observed:
    """The reconciler's view of a ``kubevirt.io/v1`` VirtualMachine.

    Every interface with a ``macAddress`` counts, whatever its binding: a requested MAC is
    registered on every interface at admission too (see :mod:`plugins.kubernetes.admission`).
    """
    identity = _identity(obj)
    annotations = _mapping(_mapping(obj.get("metadata")).get("annotations"))
    stamp = annotations.get(TRANSACTION_ANNOTATION)
    stamp_ns: int | None = None
    if isinstance(stamp, str):
        try:
            stamp_ns = parse_transaction_timestamp(stamp)
        except ValueError:
            stamp = None
    else:
        stamp = None
    template_spec = _mapping(_mapping(_mapping(obj.get("spec")).get("template")).get("spec"))
    interfaces = _mapping(_mapping(template_spec.get("domain")).get("devices")).get("interfaces")
    pairs: list[tuple[str, object]] = []
    if isinstance(interfaces, list):
        pairs = [
            (iface["name"], iface.get("macAddress"))
            for iface in interfaces
            if isinstance(iface, Mapping) and isinstance(iface.get("name"), str)
        ]
    macs, invalid = _read_macs(pairs)
    status = _mapping(obj.get("status"))
    return Observed(
        kind=OWNER_VM,
        stamp=stamp,
        stamp_ns=stamp_ns,
        macs=macs,
        invalid=invalid,
        migrated_from=migration_source(_mapping(obj.get("metadata")), labels),
        ready=status.get("ready") is True or status.get("printableStatus") == "Running",
        **identity,
    )


def observe_pod(obj: Mapping[str, Any]) -> Observed:
    """The reconciler's view of a Pod: the MACs of its Multus JSON-list network elements.

    KubeVirt launcher pods and the comma form carry no MAC of their own: they observe empty.
    """
    identity = _identity(obj)
    annotations = _mapping(_mapping(obj.get("metadata")).get("annotations"))
    raw = annotations.get(MULTUS_NETWORKS_ANNOTATION)
    if not isinstance(raw, str) or is_kubevirt_launcher(obj) or not is_json_list_form(raw):
        return Observed(kind=OWNER_POD, **identity)
    try:
        elements = parse_network_selection(raw)
    except NetworkAnnotationError:
        return Observed(kind=OWNER_POD, invalid=(MULTUS_NETWORKS_ANNOTATION,), **identity)
    # Admission fills each element's empty namespace with the pod's own: both sides read that
    # namespace as "not given", so they name the interface alike.
    keys = interface_keys(elements, own_namespace=identity["namespace"])
    macs, invalid = _read_macs(
        [(key, element.get("mac")) for key, element in zip(keys, elements, strict=True)]
    )
    return Observed(kind=OWNER_POD, macs=macs, invalid=invalid, **identity)


def placeholder_prefix(generate_name: str) -> str:
    """The start of the placeholder owner names admission gives objects of ``generateName``."""
    return f"{generate_name}{PLACEHOLDER_MARK}"


def is_placeholder(owner_name: str) -> bool:
    """Whether an owner name is an admission placeholder (``<generateName>{admission:<uid>}``)."""
    return owner_name.endswith("}") and PLACEHOLDER_MARK in owner_name


__all__ = [
    "PLACEHOLDER_MARK",
    "Observed",
    "is_placeholder",
    "observe_pod",
    "observe_vm",
    "placeholder_prefix",
]
