"""A pool's ``external`` and ``duplicates`` statistics, kept as counters on its row.

Counting them from the allocations costs O(allocations) per read (about 0.8 s per pool with
10^6 allocations), and the dashboard, the pool list and the metrics read every pool's. So each
write that changes what a MAC contributes updates the counters in the same transaction:

- a pool's *external* MACs: distinct MACs held by its allocations that lie outside its ranges;
- a pool's *duplicates*: distinct MACs held by its allocations that another allocation holds too.

What one MAC contributes depends only on the pools of its holders and on the pool whose range
contains it (pools' ranges never overlap), so a change is the difference between the MAC's
:class:`Shares` before and after it. The common writes need no query for that: a MAC newly held
by one allocation is a duplicate nowhere and external at most to that allocation's pool. Only a
MAC with other holders is read before and after. Changing a pool's ranges recounts that pool's
external MACs (its duplicates do not depend on ranges).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, Table, and_, bindparam, exists, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from manager.db import Allocation, Pool, PoolRange
from manager.db.prepared import Prepared

_alloc: Table = Allocation.__table__  # type: ignore[assignment]
_pool: Table = Pool.__table__  # type: ignore[assignment]
_range: Table = PoolRange.__table__  # type: ignore[assignment]

_HOLDER_POOLS = Prepared(select(_alloc.c.pool_id).where(_alloc.c.mac == bindparam("mac")))
_ADD = Prepared(
    update(_pool)
    .where(_pool.c.id == bindparam("pool_id"))
    .values(
        external_count=_pool.c.external_count + bindparam("external"),
        duplicate_count=_pool.c.duplicate_count + bindparam("duplicates"),
        # A statistic changed, not the pool: its own timestamp stays.
        updated_at=_pool.c.updated_at,
    )
)
_COUNTERS = Prepared(
    select(_pool.c.external_count, _pool.c.duplicate_count).where(
        _pool.c.id == bindparam("pool_id")
    )
)


@dataclass(frozen=True, slots=True)
class Shares:
    """What one MAC counts for: the pools it is a duplicate of, and those it is external to."""

    duplicate: frozenset[int] = frozenset()
    external: frozenset[int] = frozenset()


NONE = Shares()


def single_holder(pool_id: int, home_id: int | None) -> Shares:
    """A MAC held by one allocation of ``pool_id``; ``home_id`` is the pool containing it."""
    return NONE if home_id == pool_id else Shares(external=frozenset({pool_id}))


def mac_shares(conn: Connection, mac: int, home_id: int | None) -> Shares:
    """What ``mac`` counts for now, read from its holders (one indexed query)."""
    return shares_from([row[0] for row in _HOLDER_POOLS.rows(conn, {"mac": mac})], home_id)


def shares_from(pools: list[int], home_id: int | None) -> Shares:
    """What a MAC counts for, given the pool of each of its holders."""
    distinct = frozenset(pools)
    return Shares(
        duplicate=distinct if len(pools) > 1 else frozenset(),
        external=distinct - {home_id} if home_id is not None else distinct,
    )


def apply_changes(session: Session, changes: Iterable[tuple[Shares, Shares]]) -> None:
    """Add the difference of each (before, after) pair to the pools' counters.

    Pools are updated in id order (no deadlock between two writers). Pool objects already in
    the session are given the stored values, so statistics read later in the transaction agree.
    """
    deltas: dict[int, list[int]] = {}
    for before, after in changes:
        for pool_id in after.external - before.external:
            deltas.setdefault(pool_id, [0, 0])[0] += 1
        for pool_id in before.external - after.external:
            deltas.setdefault(pool_id, [0, 0])[0] -= 1
        for pool_id in after.duplicate - before.duplicate:
            deltas.setdefault(pool_id, [0, 0])[1] += 1
        for pool_id in before.duplicate - after.duplicate:
            deltas.setdefault(pool_id, [0, 0])[1] -= 1
    moved = [(pool_id, d) for pool_id, d in sorted(deltas.items()) if d != [0, 0]]
    if not moved:
        return
    conn = session.connection()
    for pool_id, (external, duplicates) in moved:
        _ADD.run(conn, {"pool_id": pool_id, "external": external, "duplicates": duplicates})
        _refresh(session, conn, pool_id)


def recount_external(session: Session, pool: Pool) -> None:
    """Count the pool's external MACs anew (after its ranges changed): O(its allocations)."""
    inside = exists().where(
        _range.c.pool_id == pool.id,
        and_(_range.c.start_mac <= _alloc.c.mac, _range.c.end_mac >= _alloc.c.mac),
    )
    session.flush()
    pool.external_count = (
        session.scalar(
            select(func.count(_alloc.c.mac.distinct())).where(_alloc.c.pool_id == pool.id, ~inside)
        )
        or 0
    )


_RECOUNT_EXTERNAL = text(
    "UPDATE pools SET external_count = ("
    " SELECT count(DISTINCT a.mac) FROM allocations a WHERE a.pool_id = pools.id AND NOT EXISTS ("
    "  SELECT 1 FROM pool_ranges r"
    "  WHERE r.pool_id = pools.id AND r.start_mac <= a.mac AND r.end_mac >= a.mac))"
)
_RECOUNT_DUPLICATES = text(
    "UPDATE pools SET duplicate_count = ("
    " SELECT count(DISTINCT a.mac) FROM allocations a WHERE a.pool_id = pools.id AND EXISTS ("
    "  SELECT 1 FROM allocations b WHERE b.mac = a.mac AND b.id <> a.id))"
)


def recount_pools(session: Session) -> None:
    """Count every pool's external and duplicate MACs anew: O(allocations), for rows written
    around the services (a restore, a bulk load)."""
    session.execute(_RECOUNT_EXTERNAL)
    session.execute(_RECOUNT_DUPLICATES)
    session.expire_all()


def _refresh(session: Session, conn: Connection, pool_id: int) -> None:
    pool = session.identity_map.get(session.identity_key(Pool, (pool_id,)))
    if pool is None:
        return
    row = _COUNTERS.first(conn, {"pool_id": pool_id})
    if row is not None:
        set_committed_value(pool, "external_count", row[0])
        set_committed_value(pool, "duplicate_count", row[1])


def shares_of(
    conn: Connection, macs: Iterable[int], homes: Mapping[int, int | None]
) -> dict[int, Shares]:
    """:func:`mac_shares` of several MACs."""
    return {mac: mac_shares(conn, mac, homes.get(mac)) for mac in macs}


__all__ = [
    "NONE",
    "Shares",
    "apply_changes",
    "mac_shares",
    "recount_external",
    "recount_pools",
    "shares_from",
    "shares_of",
    "single_holder",
]
