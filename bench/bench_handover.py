"""Migration figures: a hand-over admission vs. a plain requested-MAC CREATE, and the check.

1. In-process (the webhook's WSGI app called directly, no TLS, one thread, SQLite): CPU per
   VM CREATE review that requests a free MAC, and per review of a VM that Forklift created for
   an imported oVirt VM (``vmID`` label, the oVirt VM's MAC), which moves the allocation. The
   two kinds alternate in one run. Goal: hand-over ≤ 1.5 × plain.
2. ``POST /api/v1/migrations/check`` of CHECK_NICS NICs (half held by their own oVirt VMs, the
   rest free) against a real ``macpool serve`` (see :mod:`bench.bench_http`). Goal: ≤ 2 s.

MACPOOL_BENCH_HANDOVER_REVIEWS (default 400 of each kind), MACPOOL_BENCH_CHECK_NICS (10,000).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.bench_http import create_token, running_server
from bench.common import Result, result
from manager.core.actor import Actor, Owner
from manager.core.mac import format_mac_int
from manager.db import Base, Database
from manager.services import bootstrap, create_pool, create_scope
from manager.services.allocations import AllocationRequest, allocate_macs
from plugins.kubernetes.server import WebhookApp

REVIEWS = int(os.environ.get("MACPOOL_BENCH_HANDOVER_REVIEWS", 400))
CHECK_NICS = int(os.environ.get("MACPOOL_BENCH_CHECK_NICS", 10_000))
OVIRT_BASE = 0x0E_00_00_00_00_00
FREE_BASE = 0x02_00_00_00_80_00
ACTOR = Actor("bench-import")


def _review(name: str, mac: int, labels: dict[str, str] | None) -> bytes:
    metadata: dict[str, Any] = {"name": name, "namespace": "apps"}
    if labels:
        metadata["labels"] = labels
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "template": {
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": [
                                {
                                    "name": "default",
                                    "masquerade": {},
                                    "macAddress": format_mac_int(mac),
                                }
                            ]
                        }
                    },
                    "networks": [{"name": "default", "pod": {}}],
                }
            }
        },
    }
    gvk = {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"}
    request = {
        "uid": f"uid-{name}",
        "kind": gvk,
        "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
        "name": name,
        "namespace": "apps",
        "operation": "CREATE",
        "userInfo": {"username": "bench"},
        "object": vm,
        "oldObject": None,
        "dryRun": False,
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def _post(app: WebhookApp, body: bytes) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/mutate-virtualmachines",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    answer = json.loads(b"".join(app(environ, lambda status, headers: None)))
    response: dict[str, Any] = answer["response"]
    if not response["allowed"]:
        raise RuntimeError(f"refused: {response.get('status')}")
    return response


def _import(database: Database, count: int, *, bootstrapped: bool = False) -> None:
    """``count`` oVirt VMs ``legacy-i`` (id ``ovirt-i``), one NIC each, as the importer leaves
    them, in the data center /dc1 of pool "ovirt"."""
    with database.session(write=True) as s:
        if not bootstrapped:
            bootstrap(s, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
        last = format_mac_int(OVIRT_BASE + 0xFFFF)
        pool = create_pool(s, ACTOR, name="ovirt", ranges=[f"{format_mac_int(OVIRT_BASE)}-{last}"])
        create_scope(s, ACTOR, kind="datacenter", name="dc1", pool_id=pool.id)
        allocate_macs(
            s,
            ACTOR,
            [
                AllocationRequest(
                    "/dc1",
                    Owner("ovirt-vm", f"legacy-{i}", f"ovirt-{i}"),
                    "nic1",
                    mac=format_mac_int(OVIRT_BASE + 1 + i),
                )
                for i in range(count)
            ],
        )


def admission_figures() -> list[Result]:
    """CPU per plain requested-MAC review and per hand-over review, alternating in one run."""
    with tempfile.TemporaryDirectory(prefix="macpool-bench-handover-") as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'macpool.db'}")
        Base.metadata.create_all(database.engine)
        warm = 50
        _import(database, REVIEWS + warm)
        app = WebhookApp(database, cluster_scope="/kubernetes", wait_time=300)
        cpu = {"plain": 0.0, "hand-over": 0.0}
        try:
            for i in range(REVIEWS + warm):
                plain = _review(f"plain-{i}", FREE_BASE + i, None)
                labels = {"vmID": f"ovirt-{i}", "plan": "bench-plan", "migration": "bench-run"}
                moved = _review(f"legacy-{i}", OVIRT_BASE + 1 + i, labels)
                for kind, body in (("plain", plain), ("hand-over", moved)):
                    began = time.process_time()
                    _post(app, body)
                    if i >= warm:
                        cpu[kind] += time.process_time() - began
        finally:
            database.dispose()
    plain_us = cpu["plain"] / REVIEWS * 1e6
    moved_us = cpu["hand-over"] / REVIEWS * 1e6
    notes = f"n={REVIEWS} each, alternating, in-process WSGI, SQLite, one thread"
    return [
        result("VM CREATE, requested free MAC: CPU/review", plain_us, "µs", notes),
        result("VM CREATE, hand-over of an oVirt MAC: CPU/review", moved_us, "µs", notes),
        result("hand-over ÷ plain requested", moved_us / plain_us, "ratio", "goal <= 1.5"),
    ]


def check_figures() -> list[Result]:
    """Time POST /api/v1/migrations/check of CHECK_NICS NICs against a real server."""
    held = CHECK_NICS // 2
    with tempfile.TemporaryDirectory(prefix="macpool-bench-check-") as tmp:
        data_dir = Path(tmp)
        with running_server(data_dir) as base:
            database = Database(f"sqlite:///{data_dir / 'macpool.db'}")
            try:
                _import(database, held, bootstrapped=True)
            finally:
                database.dispose()
            token = create_token(data_dir)
            vms = [
                {
                    "id": f"ovirt-{i}",
                    "name": f"legacy-{i}",
                    "nics": [{"name": "nic1", "mac": format_mac_int(OVIRT_BASE + 1 + i)}],
                }
                for i in range(CHECK_NICS)
            ]
            body = {"scope": "/kubernetes/apps", "vms": vms}
            headers = {"Authorization": f"Bearer {token}"}
            samples = []
            for _ in range(3):
                began = time.perf_counter()
                answer = requests.post(
                    f"{base}/api/v1/migrations/check", json=body, headers=headers, timeout=120
                )
                samples.append(time.perf_counter() - began)
                answer.raise_for_status()
            counts = answer.json()["counts"]
    notes = f"{CHECK_NICS:,} NICs ({counts}), SQLite, real server, best and worst of 3"
    return [
        result("migration check: best", min(samples), "s", notes + "; goal <= 2 s"),
        result("migration check: worst", max(samples), "s", notes),
    ]


def run() -> list[Result]:
    """Both figures of this module."""
    return [*admission_figures(), *check_figures()]
