"""Reading and rewriting a pod's Multus ``k8s.v1.cni.cncf.io/networks`` annotation.

Unlike KubeMacPool, which round-trips the list through Multus' Go struct (dropping unknown keys
and adding ``"cni-args": null``), elements are kept as they are: only ``mac`` and an empty
``namespace`` are filled, so nothing a user or another controller wrote is lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

#: Present once Multus has attached the networks: the pod is already wired, leave it alone.
NETWORK_STATUS_ANNOTATION: Final = "k8s.v1.cni.cncf.io/network-status"
#: Error texts are KubeMacPool's (from its ``parsePodNetworkAnnotation``).
EMPTY_ANNOTATION_MESSAGE: Final = (
    'parsePodNetworkAnnotation: pod annotation not having "network" as key, '
    "refer Multus README.md for the usage guide"
)
BAD_JSON_PREFIX: Final = (
    "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection "
    "Annotation JSON format: "
)
#: Keys whose type Multus checks when it decodes an element (others are passed through).
_STRING_KEYS: Final = ("name", "namespace", "mac", "interface", "infiniband-guid", "deviceID")
_STRING_LIST_KEYS: Final = ("ips",)


class NetworkAnnotationError(ValueError):
    """The annotation cannot be read; ``str(error)`` is the refusal message."""


def is_json_list_form(raw: str) -> bool:
    """Whether the value is meant as JSON (KubeMacPool's test: it contains ``[``, ``{`` or ``"``).

    The comma form (``net1,ns2/net2@eth1``) is left to Multus; it cannot carry a MAC.
    """
    return any(char in raw for char in '[{"')


def parse_network_selection(raw: str) -> list[dict[str, Any]]:
    """The list of selection elements; raises NetworkAnnotationError with KubeMacPool's wording."""
    if not raw.strip():
        raise NetworkAnnotationError(EMPTY_ANNOTATION_MESSAGE)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise NetworkAnnotationError(BAD_JSON_PREFIX + str(exc)) from None
    if not isinstance(value, list):
        raise NetworkAnnotationError(BAD_JSON_PREFIX + "the value is not a JSON list")
    for index, element in enumerate(value):
        _check_element(index, element)
    return value


def _check_element(index: int, element: object) -> None:
    if not isinstance(element, dict):
        raise NetworkAnnotationError(BAD_JSON_PREFIX + f"element {index} is not an object")
    name = element.get("name")
    if not isinstance(name, str) or not name:
        raise NetworkAnnotationError(BAD_JSON_PREFIX + f"element {index} has no network name")
    for key in _STRING_KEYS:
        if key in element and not isinstance(element[key], str):
            raise NetworkAnnotationError(
                BAD_JSON_PREFIX + f"element {index}: {key} must be a string"
            )
    for key in _STRING_LIST_KEYS:
        value = element.get(key)
        if key in element and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise NetworkAnnotationError(
                BAD_JSON_PREFIX + f"element {index}: {key} must be a list of strings"
            )


def interface_keys(
    elements: list[dict[str, Any]], *, own_namespace: str | None = None
) -> list[str]:
    """A stable, unique interface name per element, used as the allocation's ``interface``.

    The pod interface name when given, else the network name (``namespace/name`` when the
    namespace is explicit and not the pod's own ``own_namespace``: admission fills an empty
    namespace with the pod's, so ``net`` and ``<pod namespace>/net`` name one interface); a
    repeated key gets ``#<index>`` so two attachments of one network hold two MACs.
    """
    keys: list[str] = []
    for index, element in enumerate(elements):
        key = element.get("interface") or _network_ref(element, own_namespace)
        keys.append(f"{key}#{index}" if key in keys else key)
    return keys


def _network_ref(element: Mapping[str, Any], own_namespace: str | None) -> str:
    name = str(element["name"])
    namespace = element.get("namespace")
    return f"{namespace}/{name}" if namespace and namespace != own_namespace else name


def serialize_network_selection(elements: list[dict[str, Any]]) -> str:
    """Compact JSON of the list, keys in their original order."""
    return json.dumps(elements, separators=(",", ":"))


def is_kubevirt_launcher(pod: Mapping[str, Any]) -> bool:
    """Whether a pod is a KubeVirt virt-launcher: its MACs belong to the VM, not the pod.

    Recognised by the ``kubevirt.io: virt-launcher`` label or a VirtualMachineInstance owner.
    """
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return False
    labels = metadata.get("labels")
    if isinstance(labels, dict) and labels.get("kubevirt.io") == "virt-launcher":
        return True
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return False
    return any(
        isinstance(owner, dict)
        and owner.get("kind") == "VirtualMachineInstance"
        and str(owner.get("apiVersion", "")).startswith("kubevirt.io/")
        for owner in owners
    )


__all__ = [
    "NETWORK_STATUS_ANNOTATION",
    "NetworkAnnotationError",
    "interface_keys",
    "is_json_list_form",
    "is_kubevirt_launcher",
    "parse_network_selection",
    "serialize_network_selection",
]
