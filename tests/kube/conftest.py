"""The ``kube`` tier: MacPool against a real kube-apiserver and etcd on loopback.

One control plane per session (``control_plane``), a fresh namespace per test. The API server
runs with RBAC (MacPool uses its rendered ServiceAccount and roles) and without its watch cache,
so that compacting etcd makes an old resourceVersion 410 Gone on demand.

Skipped, with one reason, when etcd or the API server binary is missing; with
``MACPOOL_REQUIRE_KUBE=1`` (CI) a missing prerequisite fails the tier instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube.controlplane import VM_CRD, ControlPlane, missing_prerequisites
from tests.kube.macpool import Deployment, MacPoolProcess, wait_for

TESTS_FLAGS = ("--watch-cache=false",)
HERE = Path(__file__).resolve().parent
_skipped: list[str] = []


def _missing_text() -> str:
    return " and ".join(missing_prerequisites())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without etcd or the binary, leave the whole tier out and say so once (at the end);
    with MACPOOL_REQUIRE_KUBE set, keep it: its fixture then fails every test."""
    if not missing_prerequisites() or os.environ.get("MACPOOL_REQUIRE_KUBE"):
        return
    tier = [item for item in items if HERE in item.path.parents]
    if tier:
        config.hook.pytest_deselected(items=tier)
        items[:] = [item for item in items if HERE not in item.path.parents]
        _skipped.append(f"kube tier skipped ({len(tier)} tests): missing {_missing_text()}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _skipped:
        terminalreporter.write_line(line, yellow=True)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with the VirtualMachine CRD, for the whole session."""
    if missing_prerequisites():  # only reached with MACPOOL_REQUIRE_KUBE set
        pytest.fail(f"MACPOOL_REQUIRE_KUBE is set but {_missing_text()} is missing", pytrace=False)
    plane = ControlPlane(
        tmp_path_factory.mktemp("control-plane"),
        authorization_mode="RBAC",
        extra_flags=TESTS_FLAGS,
    )
    try:
        plane.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        client.ApiextensionsV1Api(api).create_custom_resource_definition(VM_CRD)
        custom = client.CustomObjectsApi(api)

        def served() -> bool:
            try:
                custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachines")
            except ApiException:
                return False
            return True

        wait_for(served, timeout=30, what="the VirtualMachine CRD served")
        api.close()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def deployment(control_plane: ControlPlane, admin_api: client.ApiClient) -> Deployment:
    """The rendered manifests applied: MacPool's namespace, ServiceAccount and RBAC."""
    deployment = Deployment(control_plane, admin_api)
    deployment.apply_namespace()
    deployment.apply_access()
    return deployment


class Cluster:
    """Small helpers over the admin client for one test's namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        self.core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        return name

    def create_vm(self, body: dict[str, Any], **kw: Any) -> Any:
        namespace = body["metadata"].get("namespace") or self.namespace
        return self.custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", namespace, "virtualmachines", body, **kw
        )

    def get_vm(self, name: str, *, namespace: str | None = None) -> Any:
        return self.custom.get_namespaced_custom_object(
            "kubevirt.io", "v1", namespace or self.namespace, "virtualmachines", name
        )

    def replace_vm(self, body: dict[str, Any]) -> Any:
        meta = body["metadata"]
        return self.custom.replace_namespaced_custom_object(
            "kubevirt.io", "v1", meta["namespace"], "virtualmachines", meta["name"], body
        )

    def delete_vm(self, name: str, *, namespace: str | None = None) -> Any:
        return self.custom.delete_namespaced_custom_object(
            "kubevirt.io", "v1", namespace or self.namespace, "virtualmachines", name
        )

    def list_vms(self, *, namespace: str | None = None) -> list[Any]:
        reply = self.custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", namespace or self.namespace, "virtualmachines"
        )
        return list(reply["items"])


@pytest.fixture
def cluster(admin_api: client.ApiClient) -> Cluster:
    """A fresh namespace (with its ``default`` ServiceAccount: no controller manager runs)."""
    helper = Cluster(admin_api, "")
    helper.namespace = helper.create_namespace(f"t-{uuid.uuid4().hex[:10]}")
    return helper


@pytest.fixture
def macpool_factory(deployment: Deployment, tmp_path: Path) -> Iterator[Any]:
    """Build MacPool processes for this test; every one still running is stopped at the end."""
    made: list[MacPoolProcess] = []

    def make(name: str = "a", **kwargs: Any) -> MacPoolProcess:
        process = MacPoolProcess(deployment, tmp_path / name, **kwargs)
        made.append(process)
        return process

    yield make
    deployment.unregister_webhook()
    for process in made:
        process.stop()
