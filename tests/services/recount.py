"""Pool statistics counted the slow way, from every allocation: what the counters must equal."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.db import Allocation, Pool
from manager.services.index_cache import pool_ranges


def recount(session: Session) -> dict[str, tuple[int, int]]:
    """Pool name → (external MACs, duplicate MACs), from the allocations and ranges."""
    rows = session.execute(select(Allocation.mac, Allocation.pool_id)).all()
    holders: dict[int, list[int]] = {}
    for mac, pool_id in rows:
        holders.setdefault(mac, []).append(pool_id)
    counts = {}
    for pool in session.scalars(select(Pool)):
        ranges = pool_ranges(pool)
        mine = {mac for mac, pools in holders.items() if pool.id in pools}
        external = sum(1 for mac in mine if ranges.find(mac) is None)
        duplicates = sum(1 for mac in mine if len(holders[mac]) > 1)
        counts[pool.name] = (external, duplicates)
    return counts


def stored(session: Session) -> dict[str, tuple[int, int]]:
    """Pool name → (external, duplicates) as the pools' counters hold them."""
    return {
        pool.name: (pool.external_count, pool.duplicate_count)
        for pool in session.scalars(select(Pool))
    }
