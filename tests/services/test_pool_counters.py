"""Pool statistics are counters kept by every write: after random operations of every kind
(single and batch allocations, requested MACs inside, outside and shared across pools,
releases, range edits) they equal a full recount, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import random

import pytest
from sqlalchemy import select, update

from manager.core.actor import Owner
from manager.core.errors import InterfaceInUse, MacInUse, PoolExhausted, RangeOverlap
from manager.core.mac import format_mac_int
from manager.core.ranges import MacRange
from manager.db import Allocation, Database, Pool
from manager.services import (
    allocate_mac,
    bootstrap,
    create_pool,
    create_scope,
    pool_statistics,
    release_allocation,
    update_pool,
)
from manager.services.allocations import AllocationRequest, allocate_macs
from manager.services.pool_counters import recount_pools
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.services.recount import recount, stored

#: Three pools on their own 32-MAC blocks; two of them allow duplicates (shared across them).
BLOCKS = {"strict": 0x0A0000000000, "dup1": 0x0C0000000000, "dup2": 0x0E0000000000}
OUTSIDE = [0x120000000001, 0x120000000002, 0x120000000003]
MACS = [base + i for base in BLOCKS.values() for i in range(24)] + OUTSIDE


def _setup(database: Database) -> None:
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        for name, base in BLOCKS.items():
            pool = create_pool(
                s,
                ACTOR,
                name=name,
                ranges=[str(MacRange(base, base + 15))],
                allow_duplicates=name != "strict",
            )
            create_scope(s, ACTOR, kind="datacenter", name=name, pool_id=pool.id)


def _step(database: Database, rng: random.Random) -> None:
    scope = "/" + rng.choice(sorted(BLOCKS))
    owner = Owner("vm", f"vm{rng.randrange(10)}")
    nic = rng.choice(["nic0", "nic1"])
    op = rng.choice(["auto", "request", "request", "batch", "release", "release", "ranges"])
    with database.session(write=True) as s:
        if op == "auto":
            allocate_mac(s, ACTOR, scope=scope, owner=owner, interface=nic)
        elif op == "request":
            allocate_mac(
                s,
                ACTOR,
                scope=scope,
                owner=owner,
                interface=nic,
                mac=format_mac_int(rng.choice(MACS)),
            )
        elif op == "batch":
            requests = [
                AllocationRequest(
                    "/" + rng.choice(sorted(BLOCKS)),
                    Owner("vm", f"b{rng.randrange(10)}"),
                    rng.choice(["nic0", "nic1"]),
                    mac=format_mac_int(rng.choice(MACS)) if rng.random() < 0.7 else None,
                )
                for _ in range(rng.randint(1, 4))
            ]
            allocate_macs(s, ACTOR, requests)
        elif op == "release":
            ids = s.scalars(select(Allocation.id).order_by(Allocation.id)).all()
            if ids:
                release_allocation(s, ACTOR, rng.choice(ids))
        else:
            name = rng.choice(sorted(BLOCKS))
            base = BLOCKS[name]
            start = rng.randrange(0, 20)
            ranges = [str(MacRange(base + start, base + start + rng.randrange(0, 12)))]
            pool = s.scalars(select(Pool).where(Pool.name == name)).one()
            update_pool(s, ACTOR, pool.id, ranges=ranges)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counters_equal_a_recount_after_random_operations(database: Database, seed: int) -> None:
    _setup(database)
    rng = random.Random(seed)
    kinds_seen = {"external": False, "duplicates": False}
    for _ in range(120):
        # A refused step writes nothing, and the counters must say so too.
        with contextlib.suppress(MacInUse, InterfaceInUse, PoolExhausted, RangeOverlap):
            _step(database, rng)
        with database.session() as s:
            counted = recount(s)
            assert stored(s) == counted
            for pool in s.scalars(select(Pool)):
                stats = pool_statistics(s, pool)
                assert (stats.external, stats.duplicates) == counted[pool.name]
        kinds_seen["external"] |= any(e for e, _ in counted.values())
        kinds_seen["duplicates"] |= any(d for _, d in counted.values())
    assert kinds_seen == {"external": True, "duplicates": True}, "the walk missed a case"
    # The full recount (for rows written around the services) agrees too.
    with database.session(write=True) as s:
        s.execute(update(Pool).values(external_count=0, duplicate_count=0))
        recount_pools(s)
    with database.session() as s:
        assert stored(s) == recount(s)
