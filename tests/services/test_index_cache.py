"""The per-process allocator index stays correct when another process changes the pool.

Two :class:`Database` objects on one database stand for two processes: each has its own
index cache (the cache is keyed by engine).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Owner
from manager.core.errors import PoolExhausted
from manager.db import Allocation, Database, HeldMac
from manager.services import (
    allocate_mac,
    create_pool,
    create_scope,
    pool_statistics,
    release_allocation,
    update_pool,
)
from manager.services.index_cache import forget, prune_history
from tests.conftest import ACTOR, DEFAULT_RANGE

SIZE = 8
RANGE = "0a:00:00:00:00:00-0a:00:00:00:00:07"


@pytest.fixture
def pair(database: Database) -> Iterator[tuple[Database, Database]]:
    """Two 'processes' on one database holding an 8-MAC pool assigned to /dc."""
    from manager.services import bootstrap

    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        pool = create_pool(s, ACTOR, name="Small", ranges=[RANGE])
        create_scope(s, ACTOR, kind="datacenter", name="dc", pool_id=pool.id)
    other = Database(str(database.url.render_as_string(hide_password=False)))
    yield database, other
    with other.session() as s:
        forget(s)
    other.dispose()


def _allocate(db: Database, name: str) -> int:
    with db.session(write=True) as s:
        return allocate_mac(
            s, ACTOR, scope="/dc", owner=Owner("vm", name), interface="nic0"
        ).allocation.mac


def _release(db: Database, mac: int) -> None:
    with db.session(write=True) as s:
        alloc_id = s.scalar(select(Allocation.id).where(Allocation.mac == mac))
        assert alloc_id is not None
        release_allocation(s, ACTOR, alloc_id)


def _held(db: Database) -> set[int]:
    with db.session() as s:
        return set(s.scalars(select(HeldMac.mac)))


def test_interleaved_processes_never_share_a_mac(pair: tuple[Database, Database]) -> None:
    one, two = pair
    handed: list[int] = []
    for i in range(SIZE):
        db = one if i % 2 == 0 else two
        handed.append(_allocate(db, f"v{i}"))
        if i == 3:  # a release seen only through the database by the other process
            _release(one, handed[1])
            handed.append(_allocate(two, "reuse"))
    assert len(set(handed)) == len(handed) - 1  # only the released MAC came back
    assert _held(one) == set(handed)
    with pytest.raises(PoolExhausted):
        _allocate(one, "extra")
    with pytest.raises(PoolExhausted):
        _allocate(two, "extra")


def test_rolled_back_allocation_does_not_poison_the_cache(
    pair: tuple[Database, Database],
) -> None:
    one, two = pair
    _allocate(one, "warm")  # both caches loaded
    _allocate(two, "warm2")
    # Two allocations in one transaction (the second replays the first, uncommitted), rolled back.
    session: Session = one.new_session(write=True)
    try:
        # A requested MAC far from the cursor, so the ghost differs from what others take next.
        for name, mac in (("ghost1", "0a:00:00:00:00:07"), ("ghost2", None)):
            allocate_mac(
                session, ACTOR, scope="/dc", owner=Owner("vm", name), interface="n", mac=mac
            )
        session.flush()
    finally:
        session.rollback()
        session.close()
    # The other process moves the pool on to the very revision the rolled-back change had.
    got = [_allocate(two, f"t{i}") for i in range(2)]
    got += [_allocate(one, f"o{i}") for i in range(SIZE - 4)]
    assert len(set(got)) == SIZE - 2
    assert len(_held(one)) == SIZE
    with pytest.raises(PoolExhausted):
        _allocate(one, "extra")
    with one.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == SIZE


def test_range_edit_elsewhere_reloads_the_index(pair: tuple[Database, Database]) -> None:
    one, two = pair
    first = _allocate(one, "a")
    with two.session(write=True) as s:
        pool_id = s.scalar(select(Allocation.pool_id).where(Allocation.mac == first))
        assert pool_id is not None
        update_pool(s, ACTOR, pool_id, ranges=["0a:00:00:00:00:00-0a:00:00:00:00:0f"])
    got = {_allocate(one, f"v{i}") for i in range(15)}
    assert first not in got and len(got) == 15
    with one.session() as s:
        pool_id2 = s.scalar(select(Allocation.pool_id).where(Allocation.mac == first))
        from manager.db import Pool

        pool = s.get(Pool, pool_id2)
        assert pool is not None
        assert pool_statistics(s, pool).available == 0


def test_pruned_history_forces_a_reload(
    pair: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = pair
    _allocate(one, "a")  # one's cache is now at an old revision
    for i in range(3):
        _allocate(two, f"b{i}")
    import manager.services.index_cache as index_cache

    monkeypatch.setattr(index_cache, "CHANGE_HISTORY", 0)
    with two.session(write=True) as s:
        assert prune_history(s) > 0
    got = {_allocate(one, f"c{i}") for i in range(SIZE - 4)}
    assert len(got) == SIZE - 4 and len(_held(one)) == SIZE
