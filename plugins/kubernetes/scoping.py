"""Which namespaces the webhook and the reconciler manage: KubeMacPool's opt modes.

The label keys are the webhook names. Opt-in manages a namespace only when its label is exactly
``allocate``; opt-out manages it unless the label is exactly ``ignore``. Critical namespaces
(``runlevel`` / ``openshift.io/run-level`` ``0`` or ``1``) and MacPool's own namespace are never
managed, so MacPool can never block its own start or the cluster network's. The same rules are
rendered into the webhook's ``namespaceSelector`` (see :mod:`plugins.kubernetes.manifests`), so
the API server and the reconciler agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

OptMode = Literal["opt-in", "opt-out"]
Kind = Literal["vm", "pod"]

VM_WEBHOOK: Final = "mutatevirtualmachines.kubemacpool.io"
POD_WEBHOOK: Final = "mutatepods.kubemacpool.io"
#: The namespace label key of each owner kind (the webhook's name).
LABEL_KEYS: Final[dict[str, str]] = {"vm": VM_WEBHOOK, "pod": POD_WEBHOOK}
DEFAULT_MODES: Final[dict[str, OptMode]] = {"vm": "opt-out", "pod": "opt-in"}
OPT_IN_VALUE: Final = "allocate"
OPT_OUT_VALUE: Final = "ignore"
RUNLEVEL_LABELS: Final = ("runlevel", "openshift.io/run-level")
CRITICAL_RUNLEVELS: Final = ("0", "1")
#: Set by the API server on every namespace (Kubernetes ≥ 1.21); used to exclude our own.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


def parse_opt_mode(value: str) -> OptMode:
    """Validate an opt mode given in configuration (``opt-in`` or ``opt-out``)."""
    normalized = value.strip().lower()
    if normalized == "opt-in":
        return "opt-in"
    if normalized == "opt-out":
        return "opt-out"
    raise ValueError(f"{value!r} is not an opt mode: use opt-in or opt-out")


def is_managed(
    kind: str,
    namespace_labels: Mapping[str, str] | None,
    namespace_name: str,
    *,
    own_namespace: str,
    mode: OptMode | None = None,
) -> bool:
    """Whether objects of ``kind`` (``vm`` or ``pod``) in this namespace get MACs from MacPool."""
    if kind not in LABEL_KEYS:
        raise ValueError(f"unknown owner kind {kind!r}: expected vm or pod")
    labels = namespace_labels or {}
    if namespace_name == own_namespace:
        return False
    if any(labels.get(key) in CRITICAL_RUNLEVELS for key in RUNLEVEL_LABELS):
        return False
    value = labels.get(LABEL_KEYS[kind])
    if (mode or DEFAULT_MODES[kind]) == "opt-in":
        return value == OPT_IN_VALUE
    return value != OPT_OUT_VALUE


def namespace_selector(kind: str, *, mode: OptMode, own_namespace: str) -> dict[str, Any]:
    """The webhook's ``namespaceSelector`` equivalent to :func:`is_managed`."""
    key = LABEL_KEYS[kind]
    opt = (
        {"key": key, "operator": "In", "values": [OPT_IN_VALUE]}
        if mode == "opt-in"
        else {"key": key, "operator": "NotIn", "values": [OPT_OUT_VALUE]}
    )
    expressions = [opt]
    expressions += [
        {"key": label, "operator": "NotIn", "values": list(CRITICAL_RUNLEVELS)}
        for label in RUNLEVEL_LABELS
    ]
    expressions.append(
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": [own_namespace]}
    )
    return {"matchExpressions": expressions}


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Evaluate a LabelSelector (``matchLabels`` and ``matchExpressions``) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def namespace_scope_path(cluster_scope: str, namespace: str) -> str:
    """The MacPool scope path of a namespace: a child of the configured cluster scope."""
    return f"{cluster_scope.rstrip('/')}/{namespace}"


__all__ = [
    "DEFAULT_MODES",
    "LABEL_KEYS",
    "POD_WEBHOOK",
    "VM_WEBHOOK",
    "OptMode",
    "is_managed",
    "namespace_scope_path",
    "namespace_selector",
    "parse_opt_mode",
    "selector_matches",
]
