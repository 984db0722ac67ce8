"""Admission decisions for VirtualMachines and Pods, wire-compatible with KubeMacPool.

Server-agnostic: each function takes a parsed :class:`AdmissionRequest` and a
:class:`MacBroker` and returns an :class:`AdmissionResult`; the HTTP layer encodes it.

Decisions taken where KubeMacPool is quirky (see reference/kubemacpool.md §10):

- the "does this interface get a pool MAC" rule (masquerade binding or Multus network) applies
  on UPDATE as on CREATE; requested MACs are registered on every interface;
- requested MACs are validated (format, unicast, not all-zero, intra-object duplicates) also on
  dry-run, so a dry run gives the very answer a real request would;
- a MAC that an UPDATE removes from the VM stays held: the reconciler releases it once it sees
  the persisted VM carrying this request's transaction stamp (or the stamp never appears within
  ``MACPOOL_K8S_WAIT_TIME``). A *changed* MAC moves at once inside the broker's unit of work,
  because an interface holds one MAC; should the update never persist, the reconciler realigns
  the allocations with the stored VM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from manager.core.errors import (
    DatabaseUnavailable,
    InvalidMac,
    MacInUse,
    MacPoolError,
    PoolExhausted,
)
from manager.core.mac import parse_assignable_mac
from manager.services import AnsweredError, answer_for
from plugins.kubernetes.broker import (
    FORKLIFT_LABELS,
    OWNER_POD,
    OWNER_VM,
    MacBroker,
    MigrationLabels,
    NicClaim,
    Owner,
    holders_text,
    migration_source,
)
from plugins.kubernetes.multus import (
    NETWORK_STATUS_ANNOTATION,
    NetworkAnnotationError,
    interface_keys,
    is_json_list_form,
    is_kubevirt_launcher,
    parse_network_selection,
    serialize_network_selection,
)
from plugins.kubernetes.patches import (
    MULTUS_NETWORKS_ANNOTATION,
    TRANSACTION_ANNOTATION,
    JsonPatch,
    annotation_ops,
    interface_mac_op,
    multus_networks_op,
    now_transaction_timestamp,
)
from plugins.kubernetes.review import AdmissionRequest, AdmissionResult

VM_CREATE_PREFIX: Final = "Failed to create virtual machine allocation error: "
VM_UPDATE_PREFIX: Final = "Failed to update virtual machine allocation error: "
VM_ALLOCATE_PREFIX: Final = "Failed to allocate mac to the vm object: "
VM_MUTATE_PREFIX: Final = "Failed to mutate virtual machine: "
TEMPLATE_NIL_MESSAGE: Final = "virtual machine template is nil, ignoring virtual machine"
RANGE_FULL: Final = "the range is full"
REQUESTED_IN_USE: Final = "failed to allocate requested mac address"

Clock = Callable[[], str]


class _Refused(Exception):
    """Internal: stop the review with this refusal."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def owner_of(
    request: AdmissionRequest, kind: str, *, labels: MigrationLabels | None = None
) -> Owner:
    """The owner identity of the object under review.

    Objects created with ``generateName`` have no name yet; they get the placeholder
    ``<generateName>{admission:<uid>}`` so concurrent creations never share an identity (and a
    retry of the same request, which keeps its uid, reuses its MACs). The reconciler moves such
    allocations to the real name when it sees the object.
    """
    obj = request.object or {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = request.namespace or str(metadata.get("namespace") or "")
    name = request.name or str(metadata.get("name") or "")
    if not name:
        name = f"{metadata.get('generateName') or ''}{{admission:{request.uid}}}"
    uid = metadata.get("uid")
    source = None if labels is None else migration_source(metadata, labels)
    return Owner(
        namespace=namespace, kind=kind, name=name, uid=uid if uid else None, migrated_from=source
    )


def review_virtual_machine(
    request: AdmissionRequest,
    *,
    broker: MacBroker,
    clock: Clock = now_transaction_timestamp,
    labels: MigrationLabels = FORKLIFT_LABELS,
) -> AdmissionResult:
    """Decide on a CREATE or UPDATE of a ``kubevirt.io/v1`` VirtualMachine (DESIGN §5)."""
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return AdmissionResult.allow()
    updating = request.operation == "UPDATE"
    # KubeMacPool's wording: CREATE refusals name the allocation step, UPDATE ones do not.
    operation_prefix = VM_UPDATE_PREFIX if updating else VM_CREATE_PREFIX
    allocate_prefix = "" if updating else VM_ALLOCATE_PREFIX
    vm = request.object
    if _dig(vm, "metadata", "deletionTimestamp"):
        return AdmissionResult.allow()
    if not isinstance(_dig(vm, "spec", "template"), dict):
        return AdmissionResult.allow(message=TEMPLATE_NIL_MESSAGE)
    try:
        interfaces = _list_of_objects(vm, "spec", "domain", "devices", "interfaces")
        networks = _list_of_objects(vm, "spec", "networks")
        names = _interface_names(interfaces)
        old_macs = _interface_macs(request.old_object) if updating else {}
        owner = owner_of(request, OWNER_VM, labels=labels)
        held = broker.held_macs(owner)
        claims, filled = _vm_claims(
            interfaces, names, networks, held=held, old_macs=old_macs, prefix=allocate_prefix
        )
        _check_duplicate_macs(claims, prefix=allocate_prefix)
    except _Refused as refusal:
        return AdmissionResult.deny(refusal.code, operation_prefix + refusal.message)

    stamp = _transaction_stamp(request, clock=clock)
    try:
        macs = broker.claim(
            owner, claims, transaction=stamp or _current_stamp(vm), dry_run=request.dry_run
        )
    except MacPoolError as exc:
        return _refusal(exc, prefix=operation_prefix + allocate_prefix)
    patch: JsonPatch = annotation_ops(vm, TRANSACTION_ANNOTATION, stamp) if stamp else []
    patch += [interface_mac_op(index, macs[name]) for index, name in filled]
    return AdmissionResult.allow(patch, macs=macs)


def review_pod(request: AdmissionRequest, *, broker: MacBroker) -> AdmissionResult:
    """Decide on a CREATE of a Pod: give each Multus JSON-list network element a MAC."""
    pod = request.object
    if request.operation != "CREATE" or pod is None:
        return AdmissionResult.allow()
    annotations = _dig(pod, "metadata", "annotations")
    if not isinstance(annotations, dict):
        return AdmissionResult.allow()
    raw = annotations.get(MULTUS_NETWORKS_ANNOTATION)
    if not isinstance(raw, str) or NETWORK_STATUS_ANNOTATION in annotations:
        return AdmissionResult.allow()
    if is_kubevirt_launcher(pod) or (raw.strip() and not is_json_list_form(raw)):
        return AdmissionResult.allow()
    try:
        elements = parse_network_selection(raw)
    except NetworkAnnotationError as exc:
        return AdmissionResult.deny(400, str(exc))
    if not elements:
        return AdmissionResult.allow()
    owner = owner_of(request, OWNER_POD)
    keys = interface_keys(elements, own_namespace=owner.namespace)
    pairs = zip(keys, elements, strict=True)
    claims = [NicClaim(key, element.get("mac") or None) for key, element in pairs]
    try:
        for claim in claims:
            _validate_requested(claim.interface, claim.mac, prefix="")
        _check_duplicate_macs(claims, prefix="")
    except _Refused as refusal:
        return AdmissionResult.deny(refusal.code, refusal.message)
    try:
        macs = broker.claim(owner, claims, transaction=None, dry_run=request.dry_run)
    except MacPoolError as exc:
        return _refusal(exc, prefix="")
    updated = [dict(element) for element in elements]
    for key, element in zip(keys, updated, strict=True):
        if not element.get("namespace"):
            element["namespace"] = owner.namespace
        if not element.get("mac"):
            element["mac"] = macs[key]
    if updated == elements:
        return AdmissionResult.allow(macs=macs)
    patch = [multus_networks_op(serialize_network_selection(updated))]
    return AdmissionResult.allow(patch, macs=macs)


# --- VirtualMachine helpers -------------------------------------------------------------------


def _dig(obj: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list_of_objects(vm: Mapping[str, Any], *path: str) -> list[Mapping[str, Any]]:
    value = _dig(_dig(vm, "spec", "template"), *path)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        where = ".".join(("spec.template", *path))
        raise _Refused(422, f"{VM_MUTATE_PREFIX}{where} must be a list of objects")
    return value


def _interface_names(interfaces: Sequence[Mapping[str, Any]]) -> list[str]:
    names = [iface.get("name") for iface in interfaces]
    if not all(isinstance(name, str) and name for name in names):
        raise _Refused(422, f"{VM_MUTATE_PREFIX}every interface must have a name")
    repeated = sorted({str(name) for name in names if names.count(name) > 1})
    if repeated:
        raise _Refused(
            422,
            f"{VM_MUTATE_PREFIX}every interface must have a unique name "
            f"(repeated: {', '.join(repeated)})",
        )
    return [str(name) for name in names]


def _interface_macs(vm: Mapping[str, Any] | None) -> dict[str, str]:
    """Name → MAC of the interfaces of a stored VM that carry a MAC (tolerates any shape)."""
    interfaces = _dig(vm, "spec", "template", "spec", "domain", "devices", "interfaces")
    if not isinstance(interfaces, list):
        return {}
    return {
        iface["name"]: iface["macAddress"]
        for iface in interfaces
        if isinstance(iface, dict)
        and isinstance(iface.get("name"), str)
        and isinstance(iface.get("macAddress"), str)
        and iface["macAddress"]
    }


def gets_pool_mac(iface: Mapping[str, Any], multus_networks: set[str]) -> bool:
    """KubeMacPool's rule: a masquerade binding, or an interface on a Multus network."""
    return iface.get("masquerade") is not None or iface.get("name") in multus_networks


def _vm_claims(
    interfaces: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    networks: Sequence[Mapping[str, Any]],
    *,
    held: Mapping[str, str],
    old_macs: Mapping[str, str],
    prefix: str,
) -> tuple[list[NicClaim], list[tuple[int, str]]]:
    """The claims for the VM, and (index, name) of interfaces whose MAC must be patched in."""
    multus = {str(net.get("name")) for net in networks if net.get("multus") is not None}
    claims: list[NicClaim] = []
    filled: list[tuple[int, str]] = []
    for index, (iface, name) in enumerate(zip(interfaces, names, strict=True)):
        requested = iface.get("macAddress")
        if requested not in (None, ""):
            _validate_requested(name, requested, prefix=prefix)
            claims.append(NicClaim(name, str(requested)))
            continue
        kept = held.get(name) or old_macs.get(name)
        if kept or (networks and gets_pool_mac(iface, multus)):
            claims.append(NicClaim(name, kept))
            filled.append((index, name))
    return claims, filled


def _validate_requested(interface: str, value: object, *, prefix: str) -> None:
    if value is None:
        return
    try:
        parse_assignable_mac(value)
    except InvalidMac as exc:
        raise _Refused(
            422, f"{prefix}invalid MAC address format for interface {interface}: {value}: {exc}"
        ) from None


def _check_duplicate_macs(claims: Sequence[NicClaim], *, prefix: str) -> None:
    seen: dict[int, str] = {}
    for claim in claims:
        if claim.mac is None:
            continue
        value = int(parse_assignable_mac(claim.mac))
        if value in seen:
            mac = parse_assignable_mac(claim.mac)
            raise _Refused(
                422,
                f"{prefix}duplicate MAC address {mac} found on interfaces: "
                f"{seen[value]} and {claim.interface}",
            )
        seen[value] = claim.interface


def _current_stamp(vm: Mapping[str, Any]) -> str | None:
    stamp = _dig(vm, "metadata", "annotations", TRANSACTION_ANNOTATION)
    return stamp if isinstance(stamp, str) else None


def _transaction_stamp(request: AdmissionRequest, *, clock: Clock) -> str | None:
    """A new stamp on CREATE, and on UPDATE only when spec, labels or annotations changed."""
    if request.operation == "CREATE" or request.old_object is None:
        return clock()
    new, old = request.object or {}, request.old_object
    if _dig(new, "spec") != _dig(old, "spec"):
        return clock()
    if _dig(new, "metadata", "labels") != _dig(old, "metadata", "labels"):
        return clock()
    if _annotations_without_stamp(new) != _annotations_without_stamp(old):
        return clock()
    return None


def _annotations_without_stamp(obj: Mapping[str, Any]) -> dict[str, Any]:
    annotations = _dig(obj, "metadata", "annotations")
    if not isinstance(annotations, dict):
        return {}
    return {key: value for key, value in annotations.items() if key != TRANSACTION_ANNOTATION}


# --- errors -----------------------------------------------------------------------------------


def outage_refusal(request: AdmissionRequest, exc: DatabaseUnavailable) -> AdmissionResult:
    """The refusal of a review that could not reach the database (``status.code`` 503)."""
    prefix = ""
    if request.kind.kind == "VirtualMachine":
        prefix = VM_UPDATE_PREFIX if request.operation == "UPDATE" else VM_CREATE_PREFIX
    return _refusal(exc, prefix=prefix)


def _refusal(exc: AnsweredError, *, prefix: str) -> AdmissionResult:
    """The one place where domain errors and outages become admission refusals."""
    answer = answer_for(exc)
    details = answer.details
    pool = details.get("pool")
    pool_text = f"pool '{pool}'" if pool else "its pool"
    if isinstance(exc, PoolExhausted):
        message = f"{prefix}{RANGE_FULL} ({pool_text} has no free MAC address)"
    elif isinstance(exc, MacInUse):
        mac = details.get("mac", "the MAC")
        holders = holders_text(details.get("holders"))
        message = (
            f"{prefix}{REQUESTED_IN_USE}: {mac} is held by {holders}; "
            f"{pool_text} does not allow duplicates"
        )
    else:
        message = f"{prefix}{answer.message}"
    return AdmissionResult.deny(answer.status, message)


__all__ = [
    "RANGE_FULL",
    "REQUESTED_IN_USE",
    "TEMPLATE_NIL_MESSAGE",
    "VM_ALLOCATE_PREFIX",
    "VM_CREATE_PREFIX",
    "VM_MUTATE_PREFIX",
    "VM_UPDATE_PREFIX",
    "gets_pool_mac",
    "outage_refusal",
    "owner_of",
    "review_pod",
    "review_virtual_machine",
]
