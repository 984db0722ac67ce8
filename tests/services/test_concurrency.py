"""Two OS processes allocating from one small pool at once: every MAC handed out exactly once."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import func, select

from manager.core.mac import format_mac_int
from manager.db import Allocation, Database, HeldMac, Pool
from manager.services import bootstrap, create_pool, create_scope, pool_statistics
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.services.workers import allocate_same_owners, allocate_until_exhausted

SIZE = 200
START = 0x0A0000000000
PROCESSES = 2


def test_two_processes_exhaust_a_pool_without_double_handing(database: Database) -> None:
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        pool = create_pool(
            s,
            ACTOR,
            name="Shared",
            ranges=[f"{format_mac_int(START)}-{format_mac_int(START + SIZE - 1)}"],
        )
        create_scope(s, ACTOR, kind="datacenter", name="dc", pool_id=pool.id)
        pool_id = pool.id
    url = database.url.render_as_string(hide_password=False)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=allocate_until_exhausted, args=(url, i, barrier, results))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    assert [error for _, _, error in got] == [None] * PROCESSES
    per_worker = {worker: macs for worker, macs, _ in got}
    every = [mac for macs in per_worker.values() for mac in macs]
    assert len(every) == SIZE, "allocations must add up to the pool size"
    assert sorted(every) == list(range(START, START + SIZE)), "each MAC exactly once"
    assert all(per_worker[w] for w in range(PROCESSES)), "both processes got some"
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == SIZE
        assert s.scalar(select(func.count()).select_from(HeldMac)) == SIZE
        stored = s.get(Pool, pool_id)
        assert stored is not None
        stats = pool_statistics(s, stored)
        assert (stats.allocated, stats.available) == (SIZE, 0)


OWNERS = 60
RETRIERS = 8


def test_identical_requests_from_many_processes_create_once(database: Database) -> None:
    """8 processes send the same 60 requests at once: one creates each, the rest get it back."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        create_scope(s, ACTOR, kind="datacenter", name="dc")
    url = database.url.render_as_string(hide_password=False)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RETRIERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=allocate_same_owners, args=(url, i, OWNERS, barrier, results))
        for i in range(RETRIERS)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    assert [error for _, _, error in got] == [None] * RETRIERS
    for i in range(OWNERS):
        answers = [owners[f"o{i}"] for _, owners, _ in got]
        assert len({mac for mac, _ in answers}) == 1, f"o{i} got different MACs: {answers}"
        assert sum(created for _, created in answers) == 1, f"o{i} created {answers}"
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == OWNERS
        assert s.scalar(select(func.count()).select_from(HeldMac)) == OWNERS
