"""``macpool k8s manifests``: a complete, applyable deployment of MacPool in a cluster.

Pure dict builders (no client needed). Names, labels and webhook names follow KubeMacPool where
they are part of its contract (webhook names = namespace label keys, paths, sideEffects); the
rest is least privilege: read-only on VMs, Pods and Namespaces, ``get``/``patch`` on its own
MutatingWebhookConfiguration only, Leases and Secrets only in its own namespace.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

from plugins.kubernetes.scoping import POD_WEBHOOK, VM_WEBHOOK, OptMode, namespace_selector

APP: Final = "macpool"
WEBHOOK_CONFIGURATION: Final = "macpool-mutator"
DATA_DIR: Final = "/var/lib/macpool"
HTTP_PORT: Final = 8080
WEBHOOK_PORT: Final = 8443

Manifest = dict[str, Any]

#: RFC 1123 label (Namespace and Service names), subdomain (Secret names), and Secret data keys,
#: as the API server validates them.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


def _check_name(what: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not valid in Kubernetes: {rule}")


_LABEL_RULE = "up to 63 lower-case letters, digits and '-', starting and ending alphanumeric"
_SUBDOMAIN_RULE = "lower-case letters, digits, '-' and '.', up to 253, alphanumeric at each end"
_KEY_RULE = "1 to 253 letters, digits, '-', '_' or '.'"


def render_manifests(
    *,
    namespace: str = "macpool-system",
    image: str,
    replicas: int = 2,
    vm_mode: OptMode = "opt-out",
    pod_mode: OptMode = "opt-in",
    database_secret: str = "macpool-database",  # noqa: S107 - a Secret name, not a secret
    database_secret_key: str = "url",  # noqa: S107 - a key name
    session_key_secret: str = "macpool-database",  # noqa: S107 - a Secret name
    session_key_secret_key: str = "session-key",  # noqa: S107 - a key name
    ca_bundle: bytes | None = None,
    service: str = "macpool-webhook",
    cluster_scope: str = "/kubernetes",
    failure_policy: Literal["Fail", "Ignore"] = "Fail",
    timeout_seconds: int = 10,
    wait_time: int = 300,
) -> list[Manifest]:
    """Every object of the deployment, in an order ``kubectl apply`` can create them.

    ``ca_bundle`` is the PEM the webhook's serving certificate chains to; leave it ``None`` when
    MacPool generates its own CA (it then patches ``caBundle`` itself at start).

    Every replica reads ``MACPOOL_SECRET_KEY`` from the ``session_key_secret`` Secret: the UI's
    session cookies and the login throttle must mean the same on all of them (a key generated
    into each pod's own data directory would log users out whenever the Service switched pods).
    """
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    _check_name("namespace", namespace, _LABEL, _LABEL_RULE)
    _check_name("service", service, _LABEL, _LABEL_RULE)
    for secret, key in (
        (database_secret, database_secret_key),
        (session_key_secret, session_key_secret_key),
    ):
        _check_name("Secret name", secret, _SUBDOMAIN, _SUBDOMAIN_RULE)
        _check_name("Secret key", key, _SECRET_KEY, _KEY_RULE)
    if not 1 <= timeout_seconds <= 30:
        raise ValueError("timeout_seconds must be between 1 and 30 (the API server's limit)")
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "manager"}
    return [
        _namespace(namespace),
        _object("v1", "ServiceAccount", APP, namespace, labels),
        *_rbac(namespace, labels),
        _deployment(
            namespace=namespace,
            image=image,
            replicas=replicas,
            labels=labels,
            env=_environment(
                namespace=namespace,
                vm_mode=vm_mode,
                pod_mode=pod_mode,
                database_secret=database_secret,
                database_secret_key=database_secret_key,
                session_key_secret=session_key_secret,
                session_key_secret_key=session_key_secret_key,
                service=service,
                cluster_scope=cluster_scope,
                wait_time=wait_time,
            ),
        ),
        _pod_disruption_budget(namespace, labels, replicas),
        _service(service, namespace, labels),
        _webhook_configuration(
            namespace=namespace,
            service=service,
            vm_mode=vm_mode,
            pod_mode=pod_mode,
            ca_bundle=ca_bundle,
            failure_policy=failure_policy,
            timeout_seconds=timeout_seconds,
            labels=labels,
        ),
    ]


def dump_manifests(manifests: Sequence[Manifest], *, output: Literal["yaml", "json"]) -> str:
    """YAML multi-document text (needs PyYAML) or a JSON ``v1/List``; both feed ``kubectl apply``."""
    if output == "json":
        document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        return json.dumps(document, indent=2) + "\n"
    try:
        import yaml
    except ImportError as exc:  # PyYAML arrives with the kubernetes extra, but is optional
        raise RuntimeError("YAML output needs PyYAML; use --output json instead") from exc
    return str(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))


def _object(
    api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
) -> Manifest:
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def _namespace(namespace: str) -> Manifest:
    manifest = _object("v1", "Namespace", namespace, None, {})
    manifest["metadata"]["labels"] = {
        "pod-security.kubernetes.io/enforce": "restricted",
        # KubeMacPool's own guard against mutating itself; harmless with MacPool's selector.
        POD_WEBHOOK: "ignore",
        VM_WEBHOOK: "ignore",
    }
    return manifest


def _rule(groups: list[str], resources: list[str], verbs: list[str], **extra: Any) -> Manifest:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **extra}


def _rbac(namespace: str, labels: dict[str, str]) -> list[Manifest]:
    read = ["get", "list", "watch"]
    cluster_role = _object("rbac.authorization.k8s.io/v1", "ClusterRole", APP, None, labels)
    cluster_role["rules"] = [
        _rule(["kubevirt.io"], ["virtualmachines"], read),
        _rule([""], ["pods", "namespaces"], read),
        _rule(
            ["admissionregistration.k8s.io"],
            ["mutatingwebhookconfigurations"],
            ["get", "patch"],
            resourceNames=[WEBHOOK_CONFIGURATION],
        ),
    ]
    role = _object("rbac.authorization.k8s.io/v1", "Role", APP, namespace, labels)
    write = ["get", "list", "watch", "create", "update", "patch"]
    role["rules"] = [
        _rule(["coordination.k8s.io"], ["leases"], write),
        _rule([""], ["secrets"], write),
        _rule([""], ["events"], ["create", "patch"]),
    ]
    subject = [{"kind": "ServiceAccount", "name": APP, "namespace": namespace}]
    cluster_binding = _object(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", APP, None, labels
    )
    cluster_binding["roleRef"] = _role_ref("ClusterRole")
    cluster_binding["subjects"] = subject
    binding = _object("rbac.authorization.k8s.io/v1", "RoleBinding", APP, namespace, labels)
    binding["roleRef"] = _role_ref("Role")
    binding["subjects"] = subject
    return [cluster_role, cluster_binding, role, binding]


def _role_ref(kind: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": APP}


def _environment(
    *,
    namespace: str,
    vm_mode: OptMode,
    pod_mode: OptMode,
    database_secret: str,
    database_secret_key: str,
    session_key_secret: str,
    session_key_secret_key: str,
    service: str,
    cluster_scope: str,
    wait_time: int,
) -> list[dict[str, Any]]:
    plain = {
        "MACPOOL_PLUGINS": "kubernetes",
        "MACPOOL_DATA_DIR": DATA_DIR,
        "MACPOOL_BIND": f"0.0.0.0:{HTTP_PORT}",
        "MACPOOL_WEBHOOK_BIND": f"0.0.0.0:{WEBHOOK_PORT}",
        "MACPOOL_K8S_CLUSTER_SCOPE": cluster_scope,
        "MACPOOL_K8S_WAIT_TIME": str(wait_time),
        "MACPOOL_K8S_RECONCILE": "true",
        # The reconciler must manage exactly the namespaces the webhook's selectors admit.
        "MACPOOL_K8S_NAMESPACE": namespace,
        "MACPOOL_K8S_VM_MODE": vm_mode,
        "MACPOOL_K8S_POD_MODE": pod_mode,
        "MACPOOL_WEBHOOK_SERVICE": service,
    }
    env: list[dict[str, Any]] = [
        {
            "name": "MACPOOL_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": database_secret, "key": database_secret_key}},
        },
        {
            "name": "MACPOOL_SECRET_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": session_key_secret, "key": session_key_secret_key}
            },
        },
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env += [{"name": name, "value": value} for name, value in plain.items()]
    return env


def _probe(path: str, *, initial_delay: int, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def _deployment(
    *,
    namespace: str,
    image: str,
    replicas: int,
    labels: dict[str, str],
    env: list[dict[str, Any]],
) -> Manifest:
    container = {
        "name": "manager",
        "image": image,
        "args": ["serve"],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
        ],
        # Timings from KubeMacPool PR #610: a long readiness period delays the first sync.
        "readinessProbe": _probe("/readyz", initial_delay=10, period=10),
        "livenessProbe": _probe("/healthz", initial_delay=15, period=20),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    pod_spec = {
        "serviceAccountName": APP,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        # Replicas on different nodes, so one node failure never blocks VM creation.
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": dict(labels)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
    }
    manifest = _object("apps/v1", "Deployment", APP, namespace, labels)
    manifest["spec"] = {
        "replicas": replicas,
        "selector": {"matchLabels": dict(labels)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    return manifest


def _pod_disruption_budget(namespace: str, labels: dict[str, str], replicas: int) -> Manifest:
    manifest = _object("policy/v1", "PodDisruptionBudget", APP, namespace, labels)
    manifest["spec"] = {
        "minAvailable": max(1, replicas - 1),
        "selector": {"matchLabels": dict(labels)},
    }
    return manifest


def _service(service: str, namespace: str, labels: dict[str, str]) -> Manifest:
    manifest = _object("v1", "Service", service, namespace, labels)
    manifest["spec"] = {
        "selector": dict(labels),
        "ports": [
            {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"},
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        ],
    }
    return manifest


def _webhook_configuration(
    *,
    namespace: str,
    service: str,
    vm_mode: OptMode,
    pod_mode: OptMode,
    ca_bundle: bytes | None,
    failure_policy: str,
    timeout_seconds: int,
    labels: dict[str, str],
) -> Manifest:
    def webhook(name: str, path: str, rule: dict[str, Any], kind: str, mode: OptMode) -> Manifest:
        client_config: dict[str, Any] = {
            "service": {"name": service, "namespace": namespace, "path": path, "port": 443}
        }
        if ca_bundle:
            client_config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
        return {
            "name": name,
            "clientConfig": client_config,
            "rules": [rule],
            "namespaceSelector": namespace_selector(kind, mode=mode, own_namespace=namespace),
            "objectSelector": {},
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": timeout_seconds,
            "admissionReviewVersions": ["v1", "v1beta1"],
            "reinvocationPolicy": "Never",
        }

    pods = webhook(
        POD_WEBHOOK,
        "/mutate-pods",
        _admission_rule([""], ["v1"], ["pods"], ["CREATE"]),
        "pod",
        pod_mode,
    )
    # virt-launcher pods carry their VM's MACs: the API server need not even call us for them.
    pods["objectSelector"] = {
        "matchExpressions": [
            {"key": "kubevirt.io", "operator": "NotIn", "values": ["virt-launcher"]}
        ]
    }
    vms = webhook(
        VM_WEBHOOK,
        "/mutate-virtualmachines",
        _admission_rule(["kubevirt.io"], ["v1"], ["virtualmachines"], ["CREATE", "UPDATE"]),
        "vm",
        vm_mode,
    )
    manifest = _object(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        WEBHOOK_CONFIGURATION,
        None,
        labels,
    )
    manifest["webhooks"] = [pods, vms]
    return manifest


def _admission_rule(
    groups: list[str], versions: list[str], resources: list[str], operations: list[str]
) -> dict[str, Any]:
    return {
        "apiGroups": groups,
        "apiVersions": versions,
        "resources": resources,
        "operations": operations,
        "scope": "Namespaced",
    }


__all__ = ["WEBHOOK_CONFIGURATION", "dump_manifests", "render_manifests"]
