"""Rendered manifests load into the official client's models and carry the promised fields."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from manager.config import load_settings
from manager.db import Database
from plugins.kubernetes.manifests import dump_manifests, render_manifests
from plugins.kubernetes.reconciler import Reconciler
from plugins.kubernetes.scoping import is_managed, selector_matches
from plugins.kubernetes.settings import KubernetesSettings

NS = "macpool-system"


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render_manifests(namespace=NS, image="quay.io/macpool/macpool:1.0")


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def test_every_object_round_trips_through_the_client_models(
    manifests: list[dict[str, Any]],
) -> None:
    api = ApiClient()
    kinds = []
    for manifest in manifests:
        model = api.deserialize(json.dumps(manifest), f"V1{manifest['kind']}", "application/json")
        # Unknown or misspelled fields would be dropped by the model: the round trip shows none.
        assert api.sanitize_for_serialization(model) == manifest
        kinds.append(manifest["kind"])
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
    ]


def test_deployment(manifests: list[dict[str, Any]]) -> None:
    deployment = by_kind(manifests, "Deployment")
    assert deployment["metadata"]["namespace"] == NS
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "macpool"
    (container,) = pod["containers"]
    assert container["image"] == "quay.io/macpool/macpool:1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["MACPOOL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "macpool-database",
        "key": "url",
    }
    # Every replica signs UI sessions with the same key, from the same Secret.
    assert env["MACPOOL_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "macpool-database",
        "key": "session-key",
    }
    assert env["MACPOOL_PLUGINS"]["value"] == "kubernetes"
    assert env["MACPOOL_WEBHOOK_BIND"]["value"] == "0.0.0.0:8443"
    assert env["MACPOOL_K8S_WAIT_TIME"]["value"] == "300"
    assert {p["containerPort"] for p in container["ports"]} == {8080, 8443}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_maps_443_to_the_webhook_port(manifests: list[dict[str, Any]]) -> None:
    service = by_kind(manifests, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["webhook"]["port"] == 443 and ports["webhook"]["targetPort"] == "webhook"
    container = by_kind(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["webhook"] == 8443
    assert (
        service["spec"]["selector"]
        == by_kind(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )


def test_rbac_is_least_privilege(manifests: list[dict[str, Any]]) -> None:
    cluster_rules = by_kind(manifests, "ClusterRole")["rules"]
    for rule in cluster_rules:
        assert not set(rule["verbs"]) & {"create", "delete", "deletecollection", "*"}
        assert "*" not in rule["resources"] and "secrets" not in rule["resources"]
    webhook_rule = next(
        r for r in cluster_rules if "mutatingwebhookconfigurations" in r["resources"]
    )
    assert webhook_rule["verbs"] == ["get", "patch"]
    assert webhook_rule["resourceNames"] == ["macpool-mutator"]
    role = by_kind(manifests, "Role")
    assert role["metadata"]["namespace"] == NS
    resources = {res for rule in role["rules"] for res in rule["resources"]}
    assert {"leases", "secrets"} <= resources
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert by_kind(manifests, kind)["subjects"] == [
            {"kind": "ServiceAccount", "name": "macpool", "namespace": NS}
        ]


def webhooks(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    config = by_kind(manifests, "MutatingWebhookConfiguration")
    return {w["name"]: w for w in config["webhooks"]}


def test_webhooks_are_kubemacpool_compatible(manifests: list[dict[str, Any]]) -> None:
    hooks = webhooks(manifests)
    pods, vms = hooks["mutatepods.kubemacpool.io"], hooks["mutatevirtualmachines.kubemacpool.io"]
    assert pods["clientConfig"]["service"]["path"] == "/mutate-pods"
    assert vms["clientConfig"]["service"]["path"] == "/mutate-virtualmachines"
    assert pods["rules"][0]["operations"] == ["CREATE"]
    assert vms["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert vms["rules"][0]["apiGroups"] == ["kubevirt.io"]
    for hook in (pods, vms):
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 10
        assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
        assert hook["clientConfig"]["service"]["namespace"] == NS
        assert "caBundle" not in hook["clientConfig"]
    assert not selector_matches(pods["objectSelector"], {"kubevirt.io": "virt-launcher"})
    assert selector_matches(pods["objectSelector"], {"app": "web"})


NAMESPACE_LABELS = [
    {},
    {"mutatevirtualmachines.kubemacpool.io": "allocate"},
    {"mutatevirtualmachines.kubemacpool.io": "ignore"},
    {"mutatepods.kubemacpool.io": "allocate"},
    {"mutatepods.kubemacpool.io": "ignore"},
    {"mutatepods.kubemacpool.io": "allocate", "runlevel": "0"},
    {"mutatevirtualmachines.kubemacpool.io": "allocate", "openshift.io/run-level": "1"},
]


@pytest.mark.parametrize("vm_mode", ["opt-in", "opt-out"])
@pytest.mark.parametrize("pod_mode", ["opt-in", "opt-out"])
def test_selectors_follow_the_opt_modes(vm_mode: Any, pod_mode: Any) -> None:
    hooks = webhooks(render_manifests(image="i", namespace=NS, vm_mode=vm_mode, pod_mode=pod_mode))
    for namespace in ("team-a", NS):
        for labels in NAMESPACE_LABELS:
            full = {**labels, "kubernetes.io/metadata.name": namespace}
            for kind, hook, mode in (
                ("vm", hooks["mutatevirtualmachines.kubemacpool.io"], vm_mode),
                ("pod", hooks["mutatepods.kubemacpool.io"], pod_mode),
            ):
                expected = is_managed(kind, labels, namespace, own_namespace=NS, mode=mode)
                assert selector_matches(hook["namespaceSelector"], full) is expected


@pytest.mark.parametrize("vm_mode", ["opt-in", "opt-out"])
@pytest.mark.parametrize("pod_mode", ["opt-in", "opt-out"])
def test_reconciler_configured_by_the_deployment_manages_what_the_webhooks_admit(
    vm_mode: Any, pod_mode: Any
) -> None:
    """The Deployment's environment tells the reconciler the namespace and the opt modes that
    the webhook selectors were rendered with: both manage the same namespaces."""
    rendered = render_manifests(image="i", namespace=NS, vm_mode=vm_mode, pod_mode=pod_mode)
    (container,) = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = load_settings(environ=environ)
    assert (
        KubernetesSettings.of(settings).k8s_namespace,
        KubernetesSettings.of(settings).k8s_vm_mode,
        KubernetesSettings.of(settings).k8s_pod_mode,
    ) == (
        NS,
        vm_mode,
        pod_mode,
    )
    database = Database("sqlite://")
    try:
        reconciler = Reconciler(database, settings, ApiClient(), use_lease=False)
        hooks = webhooks(rendered)
        for namespace in ("team-a", NS):
            for labels in NAMESPACE_LABELS:
                full = {**labels, "kubernetes.io/metadata.name": namespace}
                for kind, hook in (
                    ("vm", hooks["mutatevirtualmachines.kubemacpool.io"]),
                    ("pod", hooks["mutatepods.kubemacpool.io"]),
                ):
                    admitted = selector_matches(hook["namespaceSelector"], full)
                    assert reconciler.managed(kind, namespace, labels) is admitted
    finally:
        database.dispose()


def test_own_namespace_opts_out_for_kubemacpool_too(manifests: list[dict[str, Any]]) -> None:
    labels = by_kind(manifests, "Namespace")["metadata"]["labels"]
    assert labels["mutatepods.kubemacpool.io"] == "ignore"
    assert labels["mutatevirtualmachines.kubemacpool.io"] == "ignore"


def test_ca_bundle_is_injected() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    hooks = webhooks(render_manifests(image="i", ca_bundle=pem))
    for hook in hooks.values():
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == pem


@pytest.mark.parametrize(
    "kwargs", [{"replicas": 0}, {"timeout_seconds": 0}, {"timeout_seconds": 31}]
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render_manifests(image="i", **kwargs)


def test_dump_yaml_and_json(manifests: list[dict[str, Any]]) -> None:
    assert list(yaml.safe_load_all(dump_manifests(manifests, output="yaml"))) == manifests
    document = json.loads(dump_manifests(manifests, output="json"))
    assert document["kind"] == "List" and document["items"] == manifests


def test_containerfile_runs_macpool_serve_as_non_root() -> None:
    text = (Path(__file__).parents[3] / "plugins/kubernetes/Containerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert 'pip install ".[kubernetes]"' in text
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["macpool"]' in text and 'CMD ["serve"]' in text
