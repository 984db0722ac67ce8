"""Admission webhook throughput and latency over HTTPS with keep-alive, on SQLite.

Starts the real listener (``macpool k8s webhook``: uvicorn workers under gunicorn, TLS) and drives it
from client processes, each holding one keep-alive HTTPS connection that verifies the server:

1. closed loop, as fast as the server answers: the no-op handler (``/mutate-noop``: parse the
   review, answer "allowed"), then VM CREATE reviews (``/mutate-virtualmachines``: a new VM with
   one masquerade interface each, so every review allocates one MAC in one write transaction);
2. open loop at half the VM rate measured in 1: requests leave on a fixed schedule and latency is
   counted from the scheduled send time (no coordinated omission).

Goals (DESIGN §5 issue): VM rate / no-op rate ≥ 0.6; p99 at half the maximum VM rate ≤ 20 ms.
"""

from __future__ import annotations

import gc
import http.client
import json
import multiprocessing
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, cpu_seconds, latency_results, result
from manager.config import Settings

#: Concurrent connections. 12 keep the server's 16 request threads (the default 2 workers x 8
#: threads) busy enough to show its maximum rate; BENCHMARKS.md also gives the 6-client figures.
CLIENTS = int(os.environ.get("BENCH_WEBHOOK_CLIENTS", "12"))
SECONDS = float(os.environ.get("BENCH_WEBHOOK_SECONDS", "8"))
#: The server's workers and threads: MacPool's defaults unless set.
WORKERS = os.environ.get("BENCH_WEBHOOK_WORKERS", str(Settings.workers))
THREADS = os.environ.get("BENCH_WEBHOOK_THREADS", str(Settings.threads))
WARMUP_SECONDS = 2.0
#: Paced rates (reviews/s, all clients together) at which the server's CPU per review is also
#: measured: what a kube-apiserver creating VMs one by one or a few at a time sends.
PACED_RATES = (150, 350)
PACED_SECONDS = 4.0


def _vm_review(namespace: str, name: str) -> bytes:
    """The review the API server sends for ``kubectl create`` of a one-NIC VM."""
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": [{"name": "default", "masquerade": {}}],
                            "disks": [{"name": "disk0", "disk": {"bus": "virtio"}}],
                        },
                        "resources": {"requests": {"memory": "64Mi"}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "disk0", "containerDisk": {"image": "cirros"}}],
                },
            },
        },
    }
    gvk = {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"}
    request = {
        "uid": f"uid-{namespace}-{name}",
        "kind": gvk,
        "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
        "name": name,
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "bench"},
        "object": vm,
        "oldObject": None,
        "dryRun": False,
    }
    document = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(document).encode()


def _client(
    port: int,
    ca: str,
    path: str,
    prefix: str,
    seconds: float,
    interval: float | None,
    results: Any,
) -> None:
    """One connection: closed loop (``interval`` None) or a fixed schedule; reports latencies.

    The client is a fork of the bench process and inherits its whole heap (SQLAlchemy, the
    test harness, ...). Left alone, its first full collection walks that heap (and copies its
    pages on write): all clients paused for 0.2-0.6 s at once, about a second into each phase,
    and the open loop counted the pause as server latency. The inherited objects are frozen
    and the loop allocates no cycles, so the collector stays off while it runs.
    """
    gc.freeze()
    gc.disable()
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    # Keep-alive, as the API server: the TCP and TLS handshakes happen before the clock starts
    # (otherwise the first request of every client, all at once, counts them).
    connection.connect()
    headers = {"Content-Type": "application/json"}
    latencies: list[int] = []
    errors = 0
    count = 0
    start = time.perf_counter()
    end = start + seconds
    scheduled = start
    while True:
        now = time.perf_counter()
        if interval is not None:
            if scheduled >= end:
                break
            if scheduled > now:
                time.sleep(scheduled - now)
            sent_at = scheduled
            scheduled += interval
        else:
            if now >= end:
                break
            sent_at = now
        connection.request("POST", path, body=_vm_review(prefix, f"vm-{count}"), headers=headers)
        response = connection.getresponse()
        body = response.read()
        latencies.append(int((time.perf_counter() - sent_at) * 1e9))
        count += 1
        if response.status != 200 or b'"allowed":true' not in body:
            errors += 1
    connection.close()
    results.put((count, errors, time.perf_counter() - start, latencies))


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the webhook's arbiter and workers)."""
    pids = [pid]
    for tid in Path(f"/proc/{pid}/task").iterdir():
        children = (tid / "children").read_text().split()
        for child in children:
            pids.extend(_tree(int(child)))
    return pids


def _review_paths(port: int, ca: Path) -> dict[str, float]:
    """The server's count of reviews by how they were answered (its /metrics)."""
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    paths: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("macpool_webhook_review_paths_total{"):
            labels, value = line.rsplit(" ", 1)
            paths[labels.split('path="', 1)[1].split('"', 1)[0]] = float(value)
    return paths


def _drive(
    port: int, ca: Path, path: str, *, label: str, seconds: float, rate: float | None = None
) -> tuple[float, int, list[int]]:
    """Run CLIENTS client processes; returns (requests/s, errors, latencies in ns)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    interval = CLIENTS / rate if rate else None
    processes = [
        context.Process(
            target=_client,
            args=(port, str(ca), path, f"{label}-{index}", seconds, interval, results),
        )
        for index in range(CLIENTS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    total = sum(count for count, _, _, _ in outcomes)
    errors = sum(error for _, error, _, _ in outcomes)
    elapsed = max(duration for _, _, duration, _ in outcomes)
    latencies = [value for _, _, _, values in outcomes for value in values]
    return total / elapsed, errors, latencies


#: Reviews per in-process CPU measurement (after as many for warm-up).
IN_PROCESS_REVIEWS = int(os.environ.get("BENCH_WEBHOOK_IN_PROCESS", "3000"))


def _in_process_cpu(directory: Path, *, reserve_ahead: bool) -> tuple[float, float]:
    """CPU µs per VM CREATE review and per no-op review, the WSGI app called in this process.

    CPU is the whole process's (``time.process_time``), so the recorder thread that writes the
    answers given from reserved MACs is counted; the clock stops once every answer is stored.
    """
    import io

    from sqlalchemy import func, select

    from manager.db import Allocation, Base, Database
    from manager.services.bootstrap import bootstrap
    from plugins.kubernetes.server import WebhookApp

    path = directory / f"cpu-{reserve_ahead}.db"
    database = Database(f"sqlite:///{path}")
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as session:
        bootstrap(session, default_range="02:00:00:00:00:00-02:00:ff:ff:ff:ff")
    app = WebhookApp(
        database, cluster_scope="/kubernetes", wait_time=300, reserve_ahead=reserve_ahead
    )

    def call(path: str, body: bytes) -> None:
        environ = {
            "PATH_INFO": path,
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body),
        }
        b"".join(app(environ, lambda status, headers: None))

    def vm_count() -> int:
        with database.session() as session:
            query = select(func.count()).where(Allocation.owner_kind == "vm")
            return int(session.scalar(query) or 0)

    bodies = [_vm_review("cpu", f"vm-{i}") for i in range(2 * IN_PROCESS_REVIEWS)]
    for body in bodies[:IN_PROCESS_REVIEWS]:
        call("/mutate-virtualmachines", body)
    while vm_count() < IN_PROCESS_REVIEWS:
        time.sleep(0.05)
    started = time.process_time()
    for body in bodies[IN_PROCESS_REVIEWS:]:
        call("/mutate-virtualmachines", body)
    while vm_count() < 2 * IN_PROCESS_REVIEWS:
        time.sleep(0.01)
    vm_cpu = (time.process_time() - started) / IN_PROCESS_REVIEWS * 1e6
    started = time.process_time()
    for body in bodies[:IN_PROCESS_REVIEWS]:
        call("/mutate-noop", body)
    noop_cpu = (time.process_time() - started) / IN_PROCESS_REVIEWS * 1e6
    if app.reserved is not None:
        app.reserved.close()
    database.dispose()
    return vm_cpu, noop_cpu


def run() -> list[Result]:
    """Measure the no-op and VM CREATE rates, their ratio, and latency at half the VM rate."""
    from tests.plugins.kubernetes.webhook_harness import running_webhook

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as directory:
        for reserve_ahead in (False, True):
            vm_cpu, noop_cpu = _in_process_cpu(Path(directory), reserve_ahead=reserve_ahead)
            how = "MACs reserved ahead" if reserve_ahead else "a write per review"
            results.append(
                result(
                    f"in-process CPU per VM CREATE review, {how}",
                    vm_cpu,
                    "µs",
                    f"{IN_PROCESS_REVIEWS} reviews, one thread, recording included; goal <= 250 µs",
                )
            )
        results.append(result("in-process CPU per no-op review", noop_cpu, "µs", ""))
    setup = (
        f"{CLIENTS} keep-alive HTTPS connections, {WORKERS} uvicorn workers ({THREADS} write threads), "
        "SQLite WAL"
    )
    with (
        tempfile.TemporaryDirectory() as directory,
        running_webhook(
            Path(directory),
            MACPOOL_DEFAULT_RANGE="02:00:00:00:00:00-02:00:00:ff:ff:ff",
            MACPOOL_WORKERS=WORKERS,
            MACPOOL_THREADS=THREADS,
        ) as webhook,
    ):
        port = int(webhook.url.rsplit(":", 1)[1])
        _drive(port, webhook.ca, "/mutate-virtualmachines", label="warm", seconds=WARMUP_SECONDS)
        server = _tree(webhook.process.pid)
        cpu = cpu_seconds(server)
        noop_rate, noop_errors, noop_latencies = _drive(
            port, webhook.ca, "/mutate-noop", label="noop", seconds=SECONDS
        )
        noop_server = (cpu_seconds(server) - cpu) / (len(noop_latencies) or 1)
        cpu = cpu_seconds(server)
        before = _review_paths(port, webhook.ca)
        vm_rate, vm_errors, vm_latencies = _drive(
            port, webhook.ca, "/mutate-virtualmachines", label="max", seconds=SECONDS
        )
        vm_server = (cpu_seconds(server) - cpu) / (len(vm_latencies) or 1)
        after = _review_paths(port, webhook.ca)
        answered = {path: after.get(path, 0) - before.get(path, 0) for path in after}
        half_rate, half_errors, half_latencies = _drive(
            port, webhook.ca, "/mutate-virtualmachines", label="half", seconds=SECONDS,
            rate=vm_rate / 2,
        )  # fmt: skip
        final = _review_paths(port, webhook.ca)
        answered_half = {path: final.get(path, 0) - after.get(path, 0) for path in final}
        paced: list[tuple[str, int, float]] = []
        for name, path in (("no-op", "/mutate-noop"), ("VM CREATE", "/mutate-virtualmachines")):
            for rate in PACED_RATES:
                cpu = cpu_seconds(server)
                _, paced_errors, latencies = _drive(
                    port, webhook.ca, path, label=f"paced-{rate}", seconds=PACED_SECONDS, rate=rate
                )
                paced.append((name, rate, (cpu_seconds(server) - cpu) / (len(latencies) or 1)))
                half_errors += paced_errors
    errors = noop_errors + vm_errors + half_errors
    results.append(result("no-op reviews", noop_rate, "req/s", f"closed loop; {setup}"))
    results.append(result("VM CREATE reviews", vm_rate, "req/s", f"closed loop; {setup}"))
    results.append(result("VM/no-op ratio", vm_rate / noop_rate, "", "goal >= 0.6"))
    for name, seconds in (("no-op", noop_server), ("VM CREATE", vm_server)):
        results.append(
            result(
                f"server CPU per {name} review over HTTPS",
                seconds * 1e6,
                "µs",
                "the arbiter and its workers; TLS, HTTP and the recorder included",
            )
        )
    for name, rate, seconds in paced:
        results.append(
            result(
                f"server CPU per {name} review at {rate} reviews/s",
                seconds * 1e6,
                "µs",
                f"open loop, {CLIENTS} connections; what the closed loop's batching hides",
            )
        )
    for phase, counts in (("closed loop", answered), ("half rate", answered_half)):
        total = sum(counts.values()) or 1
        results.append(
            result(
                f"VM CREATE answered from reserved MACs, {phase}",
                100 * counts.get("reserved", 0) / total,
                "%",
                ", ".join(f"{path} {count:.0f}" for path, count in sorted(counts.items())),
            )
        )
    results.append(result("VM CREATE at half rate", half_rate, "req/s", "open loop"))
    results.extend(latency_results("no-op closed loop latency", noop_latencies, setup))
    results.extend(latency_results("VM closed loop latency", vm_latencies, setup))
    results.extend(
        latency_results(
            "VM latency at half rate", half_latencies, "from scheduled send time; goal p99 <= 20 ms"
        )
    )
    results.append(result("errors", errors, "requests", "non-200 or not allowed"))
    return results


__all__ = ["run"]
