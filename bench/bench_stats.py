"""Pool statistics with 10^6 allocations: GET /api/v1/pools/{id}, GET /api/v1/pools, dashboard.

Starts ``macpool serve`` on SQLite (see :mod:`bench.bench_http`), writes ALLOCATIONS
allocations of one pool straight into the database (rows, as a long-lived estate holds them;
some outside the pool's ranges and some shared, so every statistic is non-zero), sets the
pool's counters with a full recount (``recount_pools``), then times sequential requests
from one keep-alive client: the pool, the pool list and the UI dashboard (logged in as admin).
Goals: p99 ≤ 20 ms for both API reads, ≤ 100 ms for the dashboard.

MACPOOL_BENCH_STATS_ALLOCATIONS (default 1,000,000) and MACPOOL_BENCH_STATS_REQUESTS (200).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import func, insert, select, update

from bench.bench_http import DEFAULT_RANGE, create_token, running_server
from bench.common import Result, latency_results
from manager.core.ranges import MacRange
from manager.db import Allocation, Database, HeldMac, Pool, Scope
from manager.services.pool_counters import recount_pools

ALLOCATIONS = int(os.environ.get("MACPOOL_BENCH_STATS_ALLOCATIONS", 1_000_000))
REQUESTS = int(os.environ.get("MACPOOL_BENCH_STATS_REQUESTS", 200))
#: Every 100th allocation lies outside the pool's range; every 1000th MAC has a second holder.
OUTSIDE_EVERY = 100
SHARED_EVERY = 1000
BATCH = 50_000


def fill(data_dir: Path) -> int:
    """Write the allocations of the default pool; its id."""
    database = Database(f"sqlite:///{data_dir / 'macpool.db'}")
    start = MacRange.parse_text(DEFAULT_RANGE).start
    outside = 0x0A0000000000
    now = datetime.now(UTC)
    try:
        with database.session(write=True) as session:
            pool = session.scalars(select(Pool).where(Pool.is_default)).one()
            session.execute(update(Pool).values(allow_duplicates=True))
            engine = session.scalars(select(Scope).where(Scope.path == "/")).one()
            pool_id, scope_id = pool.id, engine.id
        for first in range(0, ALLOCATIONS, BATCH):
            held, rows = [], []
            for i in range(first, min(first + BATCH, ALLOCATIONS)):
                mac = outside + i if i % OUTSIDE_EVERY == 0 else start + i
                shared = i % SHARED_EVERY == 2
                if not shared:
                    held.append({"mac": mac})
                else:
                    mac = start + i - 1  # the previous allocation's MAC: a duplicate
                rows.append(
                    {
                        "mac": mac,
                        "pool_id": pool_id,
                        "scope_id": scope_id,
                        "owner_kind": "vm",
                        "owner_name": f"vm{i}",
                        "interface": "nic0",
                        "state": "allocated",
                        "in_range": i % OUTSIDE_EVERY != 0,
                        "created_by": "bench",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            with database.session(write=True) as session:
                session.execute(insert(HeldMac), held)
                session.execute(insert(Allocation), rows)
        with database.session(write=True) as session:
            inside = session.scalar(
                select(func.count()).where(HeldMac.mac >= start, HeldMac.mac <= start + 0xFFFFFF)
            )
            session.execute(update(Pool).where(Pool.id == pool_id).values(held_count=inside))
            recount_pools(session)
        return pool_id
    finally:
        database.dispose()


def _timed(session: requests.Session, url: str) -> list[int]:
    samples = []
    for _ in range(REQUESTS):
        began = time.perf_counter_ns()
        answer = session.get(url, timeout=60)
        samples.append(time.perf_counter_ns() - began)
        answer.raise_for_status()
    return samples


def _log_in(session: requests.Session, base: str, data_dir: Path) -> None:
    password = (data_dir / "initial-admin-password").read_text().strip()
    page = session.get(f"{base}/login", timeout=30).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if found is None:
        raise RuntimeError("no CSRF token on the login page")
    form = {"username": "admin", "password": password, "csrf_token": found.group(1)}
    answer = session.post(f"{base}/login", data=form, timeout=30, allow_redirects=False)
    if answer.status_code != 302:
        raise RuntimeError(f"login failed: {answer.status_code}")


def run() -> list[Result]:
    """Time the three reads against one server holding ALLOCATIONS allocations."""
    with tempfile.TemporaryDirectory(prefix="macpool-bench-stats-") as tmp:
        data_dir = Path(tmp)
        with running_server(data_dir) as base:
            began = time.perf_counter()
            pool_id = fill(data_dir)
            filled = time.perf_counter() - began
            token = create_token(data_dir)
            notes = f"{ALLOCATIONS:,} allocations (filled in {filled:.0f} s), SQLite, 1 client"
            with requests.Session() as api:
                api.headers["Authorization"] = f"Bearer {token}"
                pool = api.get(f"{base}/api/v1/pools/{pool_id}", timeout=60).json()
                stats = pool["statistics"]
                notes += f"; stats {stats.get('allocated')}/{stats.get('external')}/"
                notes += f"{stats.get('duplicates')} allocated/external/duplicates"
                one = _timed(api, f"{base}/api/v1/pools/{pool_id}")
                listed = _timed(api, f"{base}/api/v1/pools")
            with requests.Session() as ui:
                _log_in(ui, base, data_dir)
                dashboard = _timed(ui, f"{base}/")
    return [
        *latency_results("GET /api/v1/pools/{id}", one, notes + "; goal p99 <= 20 ms"),
        *latency_results("GET /api/v1/pools", listed, notes + "; goal p99 <= 20 ms"),
        *latency_results("UI dashboard", dashboard, notes + "; goal p99 <= 100 ms"),
    ]
