"""Kubernetes reconciler: initial sync of 10^5 VirtualMachines served by the stand-in API server.

The stand-in (tests/plugins/kubernetes/standin.py, stdlib http.server on loopback) serves the
VMs in pages of 500 like the API server; the reconciler lists them with the official client and
registers each VM's MAC through the services (``align_owner`` → ``allocate_mac``: same rules,
audit events and held-MAC index as any allocation), committing every 500 VMs. SQLite in a temp
directory. Figures:

- first sync into an empty database (what KubeMacPool does at every start: ~80 s for 10^4);
- a restart's sync when every allocation is already in step (one query, nothing to write).

Lower the size for a smoke run with MACPOOL_BENCH_K8S_VMS.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from kubernetes.client import ApiClient, Configuration

from bench.common import Result, result
from manager.config import Settings
from manager.db import Base, Database
from manager.services import bootstrap
from plugins.kubernetes.reconciler import Reconciler
from tests.plugins.kubernetes.standin import NAMESPACES, VMS, StandInServer, namespace

VMS_COUNT = int(os.environ.get("MACPOOL_BENCH_K8S_VMS", 100_000))
NAMESPACE_COUNT = 100
FIRST_MAC = 0x020000100000
STAMP = "2026-08-04T11:29:00.123456789Z"


def _vm(index: int) -> dict[str, object]:
    mac = FIRST_MAC + index
    text = ":".join(f"{(mac >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": f"vm-{index:06d}",
            "namespace": f"ns-{index % NAMESPACE_COUNT:03d}",
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "annotations": {"kubemacpool.io/transaction-timestamp": STAMP},
        },
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": [
                                {"name": "default", "masquerade": {}, "macAddress": text}
                            ]
                        }
                    },
                    "networks": [{"name": "default", "pod": {}}],
                }
            },
        },
    }


def _sync_seconds(database: Database, settings: Settings, client: ApiClient) -> float:
    reconciler = Reconciler(database, settings, client, use_lease=False, batch_size=500)
    started = time.perf_counter()
    reconciler.sync()
    return time.perf_counter() - started


def run() -> list[Result]:
    """Time the first and a repeated initial sync of ``VMS_COUNT`` VMs."""
    logging.getLogger("plugins.kubernetes").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, StandInServer() as server:
        started = time.perf_counter()
        server.state.load(NAMESPACES, (namespace(f"ns-{n:03d}") for n in range(NAMESPACE_COUNT)))
        server.state.load(VMS, (_vm(i) for i in range(VMS_COUNT)))
        generate = time.perf_counter() - started
        url = f"sqlite:///{Path(tmp) / 'macpool.db'}"
        database = Database(url)
        Base.metadata.create_all(database.engine)
        with database.session(write=True) as session:
            bootstrap(session, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
        settings = Settings(database_url=url)
        client = ApiClient(Configuration(host=server.url))
        try:
            first = _sync_seconds(database, settings, client)
            again = _sync_seconds(database, settings, client)
        finally:
            client.close()
            database.dispose()
    notes = f"{VMS_COUNT} VMs in {NAMESPACE_COUNT} namespaces, 1 MAC each, SQLite, pages of 500"
    return [
        result("k8s initial sync, empty database", first, "s", notes),
        result("k8s initial sync, empty database, rate", VMS_COUNT / first, "VMs/s", notes),
        result("k8s sync after restart (all in step)", again, "s", notes),
        result("stand-in list generation", generate, "s", "building the objects and their JSON"),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['value']:.2f} {row['unit']}")
