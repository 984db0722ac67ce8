"""Property-based: any sequence of service calls keeps the allocator's invariants (SQLite).

A hypothesis state machine drives allocate / request / release / range edits through the
service layer, one transaction per step, alternating between two :class:`Database` objects on
one file (two 'processes', each with its own index cache). The database is created once per
module and emptied cheaply before each example.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import delete, func, select, update

from manager.core.actor import Owner
from manager.core.errors import InterfaceInUse, MacInUse, PoolExhausted
from manager.core.mac import MacAddress, format_mac_int
from manager.core.ranges import MacRange, RangeSet
from manager.db import (
    Allocation,
    AuditEvent,
    Base,
    Database,
    HeldMac,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
)
from manager.services import (
    allocate_mac,
    bootstrap,
    create_pool,
    create_scope,
    release_allocation,
    update_pool,
)
from manager.services.index_cache import forget, pool_ranges
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.services.recount import recount, stored

#: Each pool's ranges are drawn from its own 16-MAC block, so edits never overlap each other.
BLOCKS = {"dup": 0x0A0000000000, "strict": 0x0E0000000000}
#: Requested MACs: inside either block, or outside every pool.
MACS = st.sampled_from(
    [base + i for base in BLOCKS.values() for i in range(16)] + [0x120000000001, 0x120000000002]
)
OWNERS = st.sampled_from([f"vm{i}" for i in range(12)])
NICS = st.sampled_from(["nic0", "nic1"])
SCOPES = st.sampled_from(["/dup", "/strict"])
WHICH = st.integers(min_value=0, max_value=1)


def _ranges_in_block(base: int) -> st.SearchStrategy[list[str]]:
    """One or two disjoint ranges inside a 16-MAC block."""
    cuts = st.lists(st.integers(0, 15), min_size=2, max_size=4, unique=True).map(sorted)

    def build(points: list[int]) -> list[str]:
        pairs = [points[i : i + 2] for i in range(0, len(points) - 1, 2)]
        return [str(MacRange(base + a, base + b)) for a, b in pairs]

    return cuts.map(build)


_databases: list[Database] = []


@pytest.fixture(scope="module", autouse=True)
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path: Path = tmp_path_factory.mktemp("props") / "macpool.db"
    first = Database(f"sqlite:///{path}")
    Base.metadata.create_all(first.engine)
    _databases[:] = [first, Database(f"sqlite:///{path}")]
    yield
    for db in _databases:
        with db.session() as s:
            forget(s)
        db.dispose()
    _databases.clear()


class Allocator(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dbs = _databases
        # Emptied, not recreated: cheap. The index caches are kept on purpose; they must notice.
        with self.dbs[0].session(write=True) as s:
            for model in (Allocation, HeldMac, AuditEvent, PoolChange):
                s.execute(delete(model))
            s.execute(update(Scope).values(pool_id=None))
            s.execute(delete(Scope).where(Scope.parent_id.is_not(None)))
            s.execute(delete(Scope))
            s.execute(delete(PoolRange))
            s.execute(delete(Pool))
        with self.dbs[0].session(write=True) as s:
            bootstrap(s, default_range=DEFAULT_RANGE)
            for name, base in BLOCKS.items():
                pool = create_pool(
                    s,
                    ACTOR,
                    name=name,
                    ranges=[str(MacRange(base, base + 7))],
                    allow_duplicates=name == "dup",
                )
                create_scope(s, ACTOR, kind="datacenter", name=name, pool_id=pool.id)

    def _free_in(self, pool_name: str) -> list[int]:
        with self.dbs[0].session() as s:
            pool = s.scalars(select(Pool).where(Pool.name == pool_name)).one()
            held = set(s.scalars(select(HeldMac.mac)))
            return [
                m
                for r in pool_ranges(pool)
                for m in range(r.start, r.end + 1)
                if m not in held and MacAddress(m).is_assignable
            ]

    @rule(which=WHICH, scope=SCOPES, owner=OWNERS, nic=NICS)
    def allocate(self, which: int, scope: str, owner: str, nic: str) -> None:
        try:
            with self.dbs[which].session(write=True) as s:
                result = allocate_mac(
                    s, ACTOR, scope=scope, owner=Owner("vm", owner), interface=nic
                )
                value = result.allocation.mac
                ranges = pool_ranges(result.allocation.pool)
                created = result.created
        except PoolExhausted:
            assert self._free_in(scope[1:]) == [], "exhausted while a MAC was free"
            return
        if created:
            assert MacAddress(value).is_assignable
            assert ranges.find(value) is not None, f"{format_mac_int(value)} outside {ranges}"

    @rule(which=WHICH, scope=SCOPES, owner=OWNERS, nic=NICS, mac=MACS)
    def request(self, which: int, scope: str, owner: str, nic: str, mac: int) -> None:
        try:
            with self.dbs[which].session(write=True) as s:
                result = allocate_mac(
                    s,
                    ACTOR,
                    scope=scope,
                    owner=Owner("vm", owner),
                    interface=nic,
                    mac=format_mac_int(mac),
                )
                assert result.allocation.mac == mac
        except (MacInUse, InterfaceInUse):
            pass

    @rule(which=WHICH, pick=st.integers(min_value=0, max_value=100))
    def release(self, which: int, pick: int) -> None:
        with self.dbs[which].session(write=True) as s:
            ids = s.scalars(select(Allocation.id).order_by(Allocation.id)).all()
            if ids:
                release_allocation(s, ACTOR, ids[pick % len(ids)])

    @rule(which=WHICH, data=st.data(), name=st.sampled_from(sorted(BLOCKS)))
    def edit_ranges(self, which: int, data: st.DataObject, name: str) -> None:
        ranges = data.draw(_ranges_in_block(BLOCKS[name]))
        with self.dbs[which].session(write=True) as s:
            pool = s.scalars(select(Pool).where(Pool.name == name)).one()
            update_pool(s, ACTOR, pool.id, ranges=ranges)

    @invariant()
    def macs_held_once_unless_all_pools_allow_duplicates(self) -> None:
        with self.dbs[0].session() as s:
            rows = s.execute(
                select(Allocation.mac, Pool.allow_duplicates).join(
                    Pool, Pool.id == Allocation.pool_id
                )
            ).all()
            held = set(s.scalars(select(HeldMac.mac)))
        by_mac: dict[int, list[bool]] = {}
        for mac, pool_allows in rows:
            by_mac.setdefault(mac, []).append(pool_allows)
        assert set(by_mac) == held, "held_macs and allocations disagree"
        for mac, allows in by_mac.items():
            if len(allows) > 1:
                assert all(allows), f"{format_mac_int(mac)} shared by a strict pool"

    @invariant()
    def held_count_matches_real_count(self) -> None:
        with self.dbs[1].session() as s:
            held = set(s.scalars(select(HeldMac.mac)))
            for pool in s.scalars(select(Pool)):
                ranges: RangeSet = pool_ranges(pool)
                real = sum(1 for m in held if ranges.find(m) is not None)
                assert pool.held_count == real, f"{pool.name}: {pool.held_count} != {real}"
            assert s.scalar(select(func.count()).select_from(Pool)) == 3

    @invariant()
    def statistics_counters_match_a_recount(self) -> None:
        with self.dbs[1].session() as s:
            assert stored(s) == recount(s)


TestAllocator = Allocator.TestCase
TestAllocator.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
