"""HTTP API figures: allocations/s over POST /api/v1/allocations vs. a trivial authenticated GET.

Starts ``macpool serve`` (gunicorn, the configured workers and threads) on SQLite in a fresh
data directory on a free loopback port, creates an operator token with ``macpool token
create``, then drives the server from several client threads, each with its own keep-alive
connection (``requests.Session``): first GET /api/v1/pools/{default id} for a fixed time, then
POST /api/v1/allocations (automatic allocation, a new owner every call) for the same time.
The ratio allocations/s ÷ GETs/s says how much the write path (BEGIN IMMEDIATE, cursor, audit
event, commit) costs over the read path; the goal is at least 0.5.

MACPOOL_BENCH_HTTP_SECONDS (default 10) and MACPOOL_BENCH_HTTP_THREADS (default 8) tune it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.common import Result, latency_results, result
from tests.ports import free_port

SECONDS = float(os.environ.get("MACPOOL_BENCH_HTTP_SECONDS", 10))
THREADS = int(os.environ.get("MACPOOL_BENCH_HTTP_THREADS", 8))
MACPOOL = Path(sys.executable).with_name("macpool")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_RANGE = "02:10:00:00:00:00-02:10:00:ff:ff:ff"


def _env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACPOOL_")}
    env.update(
        MACPOOL_DATA_DIR=str(data_dir),
        MACPOOL_PLUGINS="",
        MACPOOL_DEFAULT_RANGE=DEFAULT_RANGE,
        MACPOOL_LOG_LEVEL="WARNING",
    )
    env.update(extra or {})
    return env


@contextmanager
def running_server(data_dir: Path, extra: dict[str, str] | None = None) -> Iterator[str]:
    """``macpool serve`` on a free loopback port; yields its base URL, stops it at the end.

    ``extra``: more settings (``MACPOOL_DATABASE_URL`` for a replica of a shared database)."""
    port = free_port()
    log = (data_dir / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(MACPOOL), "serve", "--bind", f"127.0.0.1:{port}"],
        env=_env(data_dir, extra),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"macpool serve exited: see {data_dir / 'serve.log'}")
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening or not answering yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("macpool serve did not become ready within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        # The server's own process group: gunicorn's master and its workers, nothing else.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def create_token(data_dir: Path, extra: dict[str, str] | None = None) -> str:
    """An operator token, made the way an operator would: ``macpool token create``."""
    out = subprocess.run(
        [str(MACPOOL), "token", "create", "--role", "operator", "--name", "bench", "--json"],
        env=_env(data_dir, extra),
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(out.stdout)["token"])


def drive(
    call: Callable[[requests.Session, int, int], requests.Response],
    *,
    headers: dict[str, str],
    expected: set[int],
) -> tuple[float, list[int], int]:
    """Run ``call`` from THREADS threads for SECONDS; (requests/s, latencies ns, failures)."""
    stop = time.monotonic() + SECONDS
    samples: list[list[int]] = [[] for _ in range(THREADS)]
    failures = [0] * THREADS

    def worker(index: int) -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            n = 0
            while time.monotonic() < stop:
                began = time.perf_counter_ns()
                answer = call(session, index, n)
                samples[index].append(time.perf_counter_ns() - began)
                if answer.status_code not in expected:
                    failures[index] += 1
                n += 1

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    latencies = [s for per in samples for s in per]
    return len(latencies) / elapsed, latencies, sum(failures)


def run() -> list[Result]:
    """Measure GET and allocation throughput against one real server."""
    with tempfile.TemporaryDirectory(prefix="macpool-bench-http-") as tmp:
        data_dir = Path(tmp)
        with running_server(data_dir) as base:
            token = create_token(data_dir)
            headers = {"Authorization": f"Bearer {token}"}
            pools = requests.get(f"{base}/api/v1/pools", headers=headers, timeout=10).json()
            pool_url = f"{base}/api/v1/pools/{pools[0]['id']}"
            alloc_url = f"{base}/api/v1/allocations"

            def get(session: requests.Session, _thread: int, _n: int) -> requests.Response:
                return session.get(pool_url, timeout=30)

            def allocate(session: requests.Session, thread: int, n: int) -> requests.Response:
                owner = {"kind": "vm", "name": f"bench-{thread}-{n}"}
                body = {"owner": owner, "interface": "nic1"}
                return session.post(alloc_url, json=body, timeout=30)

            get_rate, get_ns, get_failed = drive(get, headers=headers, expected={200})
            alloc_rate, alloc_ns, alloc_failed = drive(allocate, headers=headers, expected={201})
    notes = f"{THREADS} keep-alive client threads, {SECONDS:g} s, SQLite, macpool serve defaults"
    return [
        result("GET /api/v1/pools/{id}", get_rate, "req/s", f"{notes}; failed={get_failed}"),
        result(
            "POST /api/v1/allocations", alloc_rate, "alloc/s", f"{notes}; failed={alloc_failed}"
        ),
        result("allocations/s ÷ GETs/s", alloc_rate / get_rate, "ratio", "goal >= 0.5"),
        *latency_results("GET /api/v1/pools/{id} latency", get_ns, notes),
        *latency_results("POST /api/v1/allocations latency", alloc_ns, notes),
    ]
