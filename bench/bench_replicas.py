"""Allocations/s through two replicas on one PostgreSQL, by number of clients.

Needs ``MACPOOL_TEST_POSTGRES_URL`` (``make bench`` runs under ``tools/with-postgres.sh``); without
it the module reports nothing. It creates a fresh database next to that one, starts two
``macpool serve`` replicas on it (the first migrates, the second starts once the first is
ready), makes an operator token and then drives ``POST /api/v1/allocations`` (automatic, a new
owner every call) from 1, 2 and 4 client threads for MACPOOL_BENCH_REPLICAS_SECONDS (default 8)
each. Every client keeps one keep-alive connection per replica and alternates between them, so
each level spreads its load over both replicas the same way. The goal (allocation-kernel issue):
allocations/s grow from 1 to 4 clients.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psycopg
import requests
from sqlalchemy.engine import make_url

from bench.bench_http import create_token, running_server
from bench.common import Result, latency_results, result

SECONDS = float(os.environ.get("MACPOOL_BENCH_REPLICAS_SECONDS", 8))
CLIENTS = (1, 2, 4)


def _fresh_database(url: str) -> str:
    """A new empty database on the server of ``url``; its SQLAlchemy URL."""
    base = make_url(url)
    name = f"bench_replicas_{uuid.uuid4().hex[:8]}"
    dsn = base.set(drivername="postgresql", database="postgres").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


def _drive(
    urls: list[str], headers: dict[str, str], clients: int, label: str
) -> tuple[float, list[int], int]:
    """``clients`` threads alternating over the replicas for SECONDS; (alloc/s, ns, failures)."""
    stop = time.monotonic() + SECONDS
    samples: list[list[int]] = [[] for _ in range(clients)]
    failures = [0] * clients

    def client(index: int) -> None:
        sessions = [requests.Session() for _ in urls]
        for session in sessions:
            session.headers.update(headers)
        n = 0
        while time.monotonic() < stop:
            body = {"owner": {"kind": "vm", "name": f"{label}-{index}-{n}"}, "interface": "nic1"}
            began = time.perf_counter_ns()
            answer = sessions[n % len(urls)].post(
                f"{urls[n % len(urls)]}/api/v1/allocations", json=body, timeout=30
            )
            samples[index].append(time.perf_counter_ns() - began)
            if answer.status_code != 201:
                failures[index] += 1
            n += 1
        for session in sessions:
            session.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [s for per in samples for s in per]
    return len(latencies) / (time.monotonic() - began), latencies, sum(failures)


def run() -> list[Result]:
    """Allocations/s with 1, 2 and 4 clients over two PostgreSQL replicas."""
    shared = os.environ.get("MACPOOL_TEST_POSTGRES_URL")
    if not shared:
        print("bench_replicas: MACPOOL_TEST_POSTGRES_URL is not set; skipped")
        return []
    extra = {"MACPOOL_DATABASE_URL": _fresh_database(shared)}
    results: list[Result] = []
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="macpool-bench-replicas-") as tmp, ExitStack() as stack:
        urls = []
        for replica in ("a", "b"):
            data_dir = Path(tmp) / replica
            data_dir.mkdir()
            urls.append(stack.enter_context(running_server(data_dir, extra)))
        headers = {"Authorization": f"Bearer {create_token(Path(tmp) / 'a', extra)}"}
        _drive(urls, headers, 2, "warm")
        for clients in CLIENTS:
            rate, latencies, failed = _drive(urls, headers, clients, f"c{clients}")
            rates[clients] = rate
            notes = (
                f"2 replicas (macpool serve defaults), PostgreSQL, {clients} client(s) "
                f"alternating replicas, {SECONDS:g} s; failed={failed}"
            )
            results.append(
                result(f"POST /api/v1/allocations, {clients} clients", rate, "alloc/s", notes)
            )
            results.extend(latency_results(f"latency, {clients} clients", latencies, notes))
    results.append(
        result(
            "4 clients ÷ 1 client",
            rates[4] / rates[1],
            "ratio",
            "goal: allocations/s grow from 1 to 4 clients (> 1)",
        )
    )
    return results


__all__ = ["run"]
