"""``/readyz`` tells the truth: every listener accepts connections, the reconciler can work.

A Deployment's readiness probe is ``/readyz``; with ``failurePolicy: Fail`` a replica that
says ready while its webhook listener is down refuses VM creation for the whole cluster.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube.conftest import Cluster
from tests.kube.macpool import NAMESPACE, SERVICE_ACCOUNT, wait_for
from tests.kube.objects import vm, vm_macs

pytestmark = pytest.mark.kube


def _reason(process: Any, check: str, containing: str = "") -> str:
    """The ``check``'s reason while not ready and the reason contains ``containing``."""
    status, body = process.readyz()
    reason = "" if status in (0, 200) else str(body.get("checks", {}).get(check, ""))
    return reason if containing in reason else ""


def _refusal(cluster: Cluster, body: dict[str, Any]) -> str:
    """The API server's refusal of a create, or "" if it was accepted (then deleted again)."""
    try:
        cluster.create_vm(body)
    except ApiException as exc:
        return str(exc.body)
    cluster.delete_vm(body["metadata"]["name"])
    return ""


def test_not_ready_until_the_webhook_listener_accepts_connections(
    cluster: Cluster, macpool_factory: Any
) -> None:
    macpool = macpool_factory()
    blocker = socket.socket()  # holds the webhook's port: its listener cannot bind yet
    blocker.bind(("127.0.0.1", macpool.webhook_port))
    try:
        macpool.start()
        reason = wait_for(lambda: _reason(macpool, "webhook"), what="a webhook reason")
        assert f"webhook listener on 127.0.0.1:{macpool.webhook_port}" in reason
        # Everything else is ready: only the listener keeps the replica out of the Service.
        wait_for(
            lambda: macpool.readyz()[1].get("checks", {}).get("kubernetes", "").startswith("ok"),
            what="the initial sync",
        )
        assert macpool.readyz()[0] == 503
        macpool.deployment.register_webhook(macpool.webhook_port, wait=False)
        # What a too-early "ready" would cause: creates refused (once the API server has the
        # configuration: it picks it up asynchronously).
        refusal = wait_for(
            lambda: _refusal(cluster, vm("early", cluster.namespace)), what="refusal"
        )
        assert "failed calling webhook" in refusal
        assert cluster.list_vms() == []
    finally:
        blocker.close()
    macpool.wait_ready(timeout=60)  # the listener is restarted and binds now
    assert set(vm_macs(cluster.create_vm(vm("late", cluster.namespace)))) == {"default", "br1"}


def test_a_missing_namespace_is_one_log_line_and_the_reason_until_it_exists(
    admin_api: client.ApiClient, macpool_factory: Any
) -> None:
    late = f"late-{uuid.uuid4().hex[:8]}"
    macpool = macpool_factory(extra_env={"MACPOOL_K8S_NAMESPACE": late, "POD_NAMESPACE": late})
    shutil.copy(macpool.deployment.control_plane.kubeconfig, macpool.env["KUBECONFIG"])
    macpool.start(kubeconfig=False)
    reason = wait_for(
        lambda: _reason(macpool, "kubernetes", "cannot work"), what="a reconciler reason"
    )
    assert reason == (
        f"reconciler cannot work: namespace '{late}' does not exist: create it (the Lease "
        "macpool-reconciler lives there) or set MACPOOL_K8S_NAMESPACE"
    )
    time.sleep(6)  # past one retry (every 5 s): still one line, no traceback
    log = macpool.log()
    assert log.count(f"namespace '{late}' does not exist") == 1, log
    assert "Traceback" not in log
    client.CoreV1Api(admin_api).create_namespace({"metadata": {"name": late}})
    macpool.wait_ready(timeout=30)
    assert "reconciler can work again" in macpool.log()


def test_missing_rbac_is_one_log_line_and_the_reason_until_it_is_granted(
    admin_api: client.ApiClient, macpool_factory: Any
) -> None:
    account = f"nobody-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": account}})
    macpool = macpool_factory(account=account).start()
    reason = wait_for(
        lambda: _reason(macpool, "kubernetes", "cannot work"), what="a reconciler reason"
    )
    assert reason.startswith("reconciler cannot work: forbidden by RBAC")
    assert f"system:serviceaccount:{NAMESPACE}:{account}" in reason
    time.sleep(6)
    log = macpool.log()
    assert log.count("forbidden by RBAC") == 1, log
    assert "Traceback" not in log
    # Grant exactly the rendered roles to this account; the reconciler recovers by itself.
    rbac = client.RbacAuthorizationV1Api(admin_api)
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    for kind, create in (
        ("ClusterRole", rbac.create_cluster_role_binding),
        ("Role", lambda body: rbac.create_namespaced_role_binding(NAMESPACE, body)),
    ):
        create(
            {
                "metadata": {"name": account, "namespace": NAMESPACE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": kind,
                    "name": SERVICE_ACCOUNT,
                },
                "subjects": subject,
            }
        )
    macpool.wait_ready(timeout=30)
