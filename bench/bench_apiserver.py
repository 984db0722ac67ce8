"""What users pay: VirtualMachine creates through a real kube-apiserver, with and without webhooks.

A control plane on loopback (Debian's etcd and the kube-apiserver v1.24 of ``../shared/k8s``,
started with the flags of its README, watch cache on) and one ``macpool serve`` with the
Kubernetes plugin (webhook and reconciler, MacPool's default workers and threads). In the same
run, N creates of a one-NIC (masquerade) VM, each in three set-ups:

- ``none``: no mutating webhook registered;
- ``noop``: a trivial webhook (a small threaded HTTPS server in its own process, answering
  "allowed" without a patch), registered like MacPool's;
- ``macpool``: MacPool's webhook configuration as ``macpool k8s manifests`` renders it.

each at concurrency 1 and 8 (client threads, one keep-alive connection each, raw HTTPS, so the
client stays cheap). Figures: creates/s, p50/p99 latency, and the CPU seconds per create of
MacPool's processes (all of ``macpool serve``'s, reconciler included: counted once its pending
allocations are confirmed), the API server and etcd, from ``/proc/PID/stat`` before and after.

Skipped (no figures) when etcd or the binary is missing. ``BENCH_APISERVER_VMS`` sets N.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import Result, cpu_seconds, percentile, result
from manager.config import Settings
from plugins.kubernetes.settings import KubernetesSettings

VMS = int(os.environ.get("BENCH_APISERVER_VMS", "400"))
CONCURRENCY = (1, 8)
WARMUP = 30


def _vm(namespace: str, name: str) -> bytes:
    """A one-NIC (masquerade) VM, as the kube tier creates them."""
    from tests.kube.objects import MASQUERADE, vm

    return json.dumps(vm(name, namespace, interfaces=[MASQUERADE])).encode()


# --- the no-op webhook ---------------------------------------------------------------------------


class _Allow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps(
            {
                "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_noop(port: int, cert: str, key: str) -> None:
    """The trivial webhook (runs in its own process)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Allow)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


# --- the load ------------------------------------------------------------------------------------


def _creates(
    plane: Any, namespace: str, count: int, concurrency: int
) -> tuple[float, list[int], int]:
    """``count`` creates from ``concurrency`` threads: (seconds, latencies in ns, failures)."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    headers = {**plane.auth_headers, "Content-Type": "application/json"}
    path = f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines"
    prefix = uuid.uuid4().hex[:6]
    latencies: list[int] = []
    failures = [0]
    counter = iter(range(count))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPSConnection("127.0.0.1", plane.api_port, context=context)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            body = _vm(namespace, f"vm-{prefix}-{index}")
            began = time.perf_counter_ns()
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            reply.read()
            elapsed = time.perf_counter_ns() - began
            with lock:
                latencies.append(elapsed)
                if reply.status != 201:
                    failures[0] += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, failures[0]


def _pending(macpool: Any) -> int:
    from sqlalchemy import func, select

    from manager.db import Allocation
    from manager.services.reservations import RESERVATION_KIND

    database = macpool.database()
    try:
        with database.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Allocation)
                    .where(Allocation.state == "pending")
                    .where(Allocation.owner_kind != RESERVATION_KIND)  # MACs reserved ahead
                )
                or 0
            )
    finally:
        database.dispose()


def _measure(
    label: str,
    *,
    plane: Any,
    cluster: Any,
    macpool: Any,
    noop_pid: int,
    settle: Callable[[], None],
) -> list[Result]:
    results: list[Result] = []
    for concurrency in CONCURRENCY:
        namespace = cluster.create_namespace(f"bench-{label}-{concurrency}-{uuid.uuid4().hex[:4]}")
        _creates(plane, namespace, WARMUP, concurrency)
        settle()
        pids = macpool.pids()
        roles = _roles(pids)
        groups = {
            "macpool": pids,
            **{f"macpool {role}": members for role, members in roles.items()},
            "kube-apiserver": [plane.pids()["kube-apiserver"]],
            "etcd": [plane.pids()["etcd"]],
            "noop webhook": [noop_pid],
        }
        before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        seconds, latencies, failures = _creates(plane, namespace, VMS, concurrency)
        settle()  # MacPool's reconciler confirms what the webhook admitted: part of the cost
        after = {name: cpu_seconds(pids) for name, pids in groups.items()}
        ordered = sorted(latencies)
        notes = f"n={VMS}; webhook={label}; c={concurrency}; failures={failures}"
        name = f"{label} c={concurrency}"
        results += [
            result(f"{name} creates/s", VMS / seconds, "1/s", notes),
            result(f"{name} p50", percentile(ordered, 0.50) / 1e6, "ms", notes),
            result(f"{name} p99", percentile(ordered, 0.99) / 1e6, "ms", notes),
        ]
        for group in (
            "macpool",
            *(f"macpool {role}" for role in roles),
            "kube-apiserver",
            "etcd",
            "noop webhook",
        ):
            if group == "noop webhook" and label != "noop":
                continue
            per_create = (after[group] - before[group]) / VMS * 1000
            results.append(result(f"{name} CPU {group}", per_create, "ms/create", notes))
        print(f"  {label} c={concurrency}: {VMS / seconds:.0f} creates/s", file=sys.stderr)
    return results


def _roles(pids: list[int]) -> dict[str, list[int]]:
    """MacPool's processes by what they run, from their command lines: the webhook listener's
    processes (``manager.plugin_process kubernetes 0`` and its workers), the reconciler's
    (``... kubernetes 1``), and the rest (``macpool serve``: UI and API)."""
    roles: dict[str, list[int]] = {"webhook": [], "reconciler": [], "ui+api": []}
    for pid in pids:
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        plugin = words[-2:-1] if b"manager.plugin_process" in words else []
        if plugin == [b"0"]:
            roles["webhook"].append(pid)
        elif plugin == [b"1"]:
            roles["reconciler"].append(pid)
        else:
            roles["ui+api"].append(pid)
    return roles


def run() -> list[Result]:
    from kubernetes import client, config

    from tests.kube.conftest import Cluster
    from tests.kube.controlplane import VM_CRD, ControlPlane, free_port, missing_prerequisites
    from tests.kube.macpool import Deployment, MacPoolProcess, wait_for

    missing = missing_prerequisites()
    if missing:
        print(f"bench_apiserver skipped: missing {' and '.join(missing)}", file=sys.stderr)
        return []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="macpool-bench-k8s-") as tmp:
        workdir = Path(tmp)
        plane = ControlPlane(workdir / "control-plane")
        noop = None
        macpool = None
        try:
            plane.start()
            api = config.new_client_from_config(config_file=str(plane.kubeconfig))
            client.ApiextensionsV1Api(api).create_custom_resource_definition(VM_CRD)
            custom = client.CustomObjectsApi(api)
            wait_for(lambda: _served(custom), timeout=30, what="the VirtualMachine CRD served")
            deployment = Deployment(plane, api)
            deployment.apply_namespace()
            deployment.apply_access()
            macpool = MacPoolProcess(
                deployment,
                workdir / "macpool",
                extra_env={
                    "MACPOOL_WORKERS": str(Settings.workers),
                    "MACPOOL_THREADS": str(Settings.threads),
                    "MACPOOL_K8S_WAIT_TIME": str(KubernetesSettings.k8s_wait_time),
                    "MACPOOL_EXPIRE_INTERVAL": str(Settings.expire_interval),
                },
            )
            macpool.start().wait_ready(timeout=120)
            noop_port = free_port()
            cert, key = plane.ca.write_serving(workdir, "noop", ips=("127.0.0.1",))
            noop = multiprocessing.Process(
                target=serve_noop, args=(noop_port, str(cert), str(key)), daemon=True
            )
            noop.start()
            assert noop.pid is not None
            cluster = Cluster(api, "")
            admission = client.AdmissionregistrationV1Api(api)
            results = [result("load average (1 min) at start", load[0], "", "os.getloadavg()")]

            def quiet() -> None:
                time.sleep(0.5)

            def confirmed() -> None:
                wait_for(lambda: _pending(macpool) == 0, timeout=120, what="confirmations")

            common = {"plane": plane, "cluster": cluster, "macpool": macpool, "noop_pid": noop.pid}
            results += _measure("none", settle=quiet, **common)
            noop_config = _noop_configuration(deployment, noop_port)
            admission.create_mutating_webhook_configuration(noop_config)
            time.sleep(1)  # the API server picks webhook configurations up asynchronously
            results += _measure("noop", settle=quiet, **common)
            admission.delete_mutating_webhook_configuration(noop_config["metadata"]["name"])
            deployment.register_webhook(macpool.webhook_port)
            time.sleep(1)
            results += _measure("macpool", settle=confirmed, **common)
            deployment.unregister_webhook()
            api.close()
            return results
        finally:
            if noop is not None:
                noop.terminate()
                noop.join(timeout=5)
            if macpool is not None:
                macpool.stop()
            plane.stop()


def _served(custom: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachines")
    except ApiException:
        return False
    return True


def _noop_configuration(deployment: Any, port: int) -> dict[str, Any]:
    """MacPool's rendered VM webhook, renamed and pointed at the no-op server."""
    from tests.kube.macpool import webhook_configuration_for

    manifest = webhook_configuration_for(deployment.rendered, port)
    manifest["metadata"] = {"name": "bench-noop"}
    manifest["webhooks"] = [
        {**w, "clientConfig": {**w["clientConfig"], "url": f"https://127.0.0.1:{port}/noop"}}
        for w in manifest["webhooks"]
        if "virtualmachines" in w["rules"][0]["resources"]
    ]
    return manifest
