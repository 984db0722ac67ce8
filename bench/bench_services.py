"""Service-layer allocation figures on SQLite (a file database in a temp dir, WAL).

- service allocations: ``allocate_mac`` through ``Database.session(write=True)``, one allocation
  per transaction, as the API does it (automatic MACs from a 2^24 pool assigned to a cluster).
- bare INSERT+COMMIT: a plain ``sqlite3`` loop on the same database file, same pragmas, one row
  per transaction; the ratio shows what the service layer costs on top of the commit itself.
- large pool: a pool with MACPOOL_BENCH_SERVICE_HELD (default 10^6) held MACs; the one-off
  index load (first allocation after a cold start) and the allocation rate once it is warm.

Sizes can be lowered for a smoke run with MACPOOL_BENCH_SERVICE_ALLOCS and
MACPOOL_BENCH_SERVICE_HELD.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select, update

from bench.common import Result, result
from manager.core.actor import Actor, Owner
from manager.db import Base, Database, HeldMac, Pool
from manager.services import allocate_mac, bootstrap, create_pool, create_scope
from manager.services.index_cache import forget, record_change

ALLOCS = int(os.environ.get("MACPOOL_BENCH_SERVICE_ALLOCS", 2000))
HELD = int(os.environ.get("MACPOOL_BENCH_SERVICE_HELD", 1_000_000))
ACTOR = Actor("bench")
SMALL_POOL = "0a:00:00:00:00:00-0a:00:00:ff:ff:ff"
LARGE_START = 0x0E0000000000
LARGE_POOL = "0e:00:00:00:00:00-0e:00:00:ff:ff:ff"
WARMUP = 50


def _setup(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as session:
        bootstrap(session, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
        for name, rng in (("small", SMALL_POOL), ("large", LARGE_POOL)):
            pool = create_pool(session, ACTOR, name=name, ranges=[rng])
            create_scope(session, ACTOR, kind="cluster", name=name, pool_id=pool.id)
    return database


def _allocate(database: Database, scope: str, prefix: str, count: int) -> float:
    """Seconds for ``count`` allocations, one transaction each."""
    return _timed_allocate(database, scope, prefix, count)[0]


def _timed_allocate(database: Database, scope: str, prefix: str, count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``count`` allocations."""
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        with database.session(write=True) as session:
            allocate_mac(
                session, ACTOR, scope=scope, owner=Owner("vm", f"{prefix}{i}"), interface="nic0"
            )
    return time.perf_counter() - began, time.process_time() - cpu


def statements_per_allocation(database: Database) -> int:
    """SQL statements SQLite runs for one automatic allocation (BEGIN and COMMIT included).

    Counted by SQLite's own trace hook: the hot path runs prepared statements on the DBAPI
    cursor, which SQLAlchemy's ``before_cursor_execute`` event does not see.
    """
    seen: list[str] = []

    def trace(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    def untrace(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.set_trace_callback(None)

    event.listen(database.engine, "checkout", trace)
    event.listen(database.engine, "checkin", untrace)
    try:
        _allocate(database, "/small", "counted", 1)
    finally:
        event.remove(database.engine, "checkout", trace)
        event.remove(database.engine, "checkin", untrace)
    return len(seen)


def service_rates(database: Database) -> tuple[float, float]:
    """Allocations per second through the service layer: by wall clock and by CPU time.

    The CPU-time rate is what the code costs when the machine is not shared with other load.
    """
    _allocate(database, "/small", "warm", WARMUP)
    wall, cpu = _timed_allocate(database, "/small", "vm", ALLOCS)
    return ALLOCS / wall, ALLOCS / cpu


def bare_insert_rate(path: Path) -> float:
    """INSERT+COMMIT per second with sqlite3 on the same file and the same pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, mac INTEGER, owner TEXT)")
        began = time.perf_counter()
        for i in range(ALLOCS):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO bench_rows (mac, owner) VALUES (?, ?)", (LARGE_START + i, f"vm{i}")
            )
            conn.execute("COMMIT")
        return ALLOCS / (time.perf_counter() - began)
    finally:
        conn.execute("DROP TABLE bench_rows")
        conn.close()


def fill_large_pool(database: Database) -> None:
    """Hold the first HELD MACs of the large pool (rows only: the index reads held_macs)."""
    with database.session(write=True) as session:
        batch = 50_000
        for first in range(0, HELD, batch):
            rows = [{"mac": LARGE_START + i} for i in range(first, min(first + batch, HELD))]
            session.execute(insert(HeldMac), rows)
        pool = session.scalars(select(Pool).where(Pool.name == "large")).one()
        record_change(session, pool, mac=None, held=False)  # processes must reload
        session.execute(update(Pool).where(Pool.id == pool.id).values(held_count=HELD))


def large_pool_figures(database: Database) -> list[Result]:
    """Cold first allocation (index load) and the warm rate in a pool with HELD held MACs."""
    fill_large_pool(database)
    with database.session() as session:
        forget(session)
    began = time.perf_counter()
    _allocate(database, "/large", "cold", 1)
    load = time.perf_counter() - began
    _allocate(database, "/large", "warm", WARMUP)
    rate = ALLOCS / _allocate(database, "/large", "vm", ALLOCS)
    notes = f"{HELD:,} held MACs in one 2^24 range"
    return [
        result("large pool: first allocation (index load)", load * 1000, "ms", notes),
        result("large pool: allocations, warm index", rate, "alloc/s", notes),
    ]


def run() -> list[Result]:
    """Every service-layer figure of this module."""
    with tempfile.TemporaryDirectory(prefix="macpool-bench-") as tmp:
        path = Path(tmp) / "macpool.db"
        database = _setup(path)
        try:
            service, service_cpu = service_rates(database)
            statements = statements_per_allocation(database)
            bare = bare_insert_rate(path)
            large = large_pool_figures(database)
        finally:
            with database.session() as session:
                forget(session)
            database.dispose()
    notes = f"n={ALLOCS}; SQLite file, WAL, synchronous=NORMAL; one transaction each"
    return [
        result("service allocations", service, "alloc/s", notes),
        result("service allocations per CPU second", service_cpu, "alloc/s", "process CPU time"),
        result("SQL statements per allocation", statements, "stmts", "BEGIN and COMMIT included"),
        result("bare INSERT+COMMIT (sqlite3)", bare, "rows/s", notes),
        result("bare / service ratio", bare / service, "x", "bare INSERT rate over service rate"),
        *large,
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:45} {row['value']:>12,.2f} {row['unit']:8} {row['notes']}")
