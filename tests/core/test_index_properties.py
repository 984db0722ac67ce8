"""Property-based tests: HeldIndex + next_free_mac against a brute-force model.

A hypothesis state machine allocates (automatically, through the cursor), requests specific MACs,
releases them, moves the cursor and replaces the pool's ranges, over a small universe that spans a
multicast block: the last 32 addresses of first octet 02 and the first 32 of first octet 04, so a
range may cross the whole multicast block 03 (2^40 addresses) between them.

Settings come from the profile ``core-<HYPOTHESIS_PROFILE>`` (``core-dev`` by default, ``core-ci``
for a longer run); they apply to this module only, never to other suites' hypothesis tests.
"""

from __future__ import annotations

import os
from itertools import pairwise

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from manager.core import HeldIndex, MacRange, RangeSet, next_free_mac
from manager.core.mac import is_multicast_int
from manager.core.ranges import next_unicast

TAIL_02 = list(range(0x02FFFFFFFFE0, 0x030000000000))
HEAD_04 = list(range(0x040000000000, 0x040000000020))
#: Every unicast address in the universe, ascending; nothing unicast lies between the two parts.
UNIVERSE = TAIL_02 + HEAD_04
#: The addresses next to the multicast block and the universe's ends, drawn more often.
EDGES = [*TAIL_02[:2], *TAIL_02[-3:], *HEAD_04[:3], *HEAD_04[-2:]]
MACS = st.one_of(st.sampled_from(EDGES), st.sampled_from(UNIVERSE))
#: Cursor values worth trying besides the universe: inside the multicast block, before, after.
ODD_CURSORS = [0x030000000000, 0x0300000000FF, 0x03FFFFFFFFFF, 0x02FFFFFFFFBF, 0xFEFFFFFFFFFF]

settings.register_profile(
    "core-dev",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "core-ci",
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_PROFILE = f"core-{os.environ.get('HYPOTHESIS_PROFILE', 'dev')}"
if _PROFILE not in ("core-dev", "core-ci"):
    _PROFILE = "core-dev"


@st.composite
def range_sets(draw: st.DrawFn) -> list[MacRange]:
    """Up to three disjoint ranges over the universe (adjacent and one-MAC ranges included)."""
    points = sorted(draw(st.sets(MACS, min_size=1, max_size=6)))
    ranges: list[MacRange] = []
    for i in range(0, len(points), 2):
        start = points[i]
        end = points[i + 1] if i + 1 < len(points) else start
        if draw(st.booleans()) and ranges and next_unicast(ranges[-1].end + 1) < start:
            # Make it adjacent to the previous range (across the multicast block if need be).
            start = next_unicast(ranges[-1].end + 1)
        ranges.append(MacRange(start, end))
    return ranges


def brute_unicast(ranges: RangeSet) -> list[int]:
    """Every unicast address in ``ranges``, ascending (ranges lie inside the universe)."""
    return [v for v in UNIVERSE if ranges.find(v) is not None]


def brute_next_free(ranges: RangeSet, held: set[int], cursor: int | None) -> int | None:
    """The cursor policy written the obvious way: after the cursor, else from the start."""
    free = [v for v in brute_unicast(ranges) if v not in held]
    if cursor is not None:
        after = [v for v in free if v > cursor]
        if after:
            return after[0]
    return free[0] if free else None


def coalesce(values: set[int]) -> list[tuple[int, int]]:
    """The sorted set ``values`` as maximal runs of consecutive integers."""
    runs: list[tuple[int, int]] = []
    for v in sorted(values):
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


class IndexMachine(RuleBasedStateMachine):
    """One pool's held MACs and cursor, checked step by step against a plain set."""

    def __init__(self) -> None:
        super().__init__()
        self.index = HeldIndex()
        self.model: set[int] = set()
        self.ranges = RangeSet([MacRange(UNIVERSE[0], UNIVERSE[-1])])
        self.cursor: int | None = None

    @rule()
    def allocate(self) -> None:
        expected = brute_next_free(self.ranges, self.model, self.cursor)
        got = next_free_mac(self.ranges, self.index, self.cursor)
        assert got == expected
        if got is None:
            # Exhausted: the brute force agrees nothing in the ranges is free.
            assert set(brute_unicast(self.ranges)) <= self.model
            return
        assert got != 0
        assert not is_multicast_int(got)
        assert self.ranges.find(got) is not None
        assert got not in self.model
        assert self.index.add(got)
        self.model.add(got)
        self.cursor = got

    @rule(mac=MACS)
    def request(self, mac: int) -> None:
        # A requested MAC may lie outside the ranges; it never moves the cursor.
        assert self.index.add(mac) == (mac not in self.model)
        self.model.add(mac)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def release_held(self, data: st.DataObject) -> None:
        mac = data.draw(st.sampled_from(sorted(self.model)))
        assert self.index.discard(mac)
        self.model.discard(mac)

    @rule(mac=MACS)
    def release_any(self, mac: int) -> None:
        assert self.index.discard(mac) == (mac in self.model)
        self.model.discard(mac)

    @rule(ranges=range_sets())
    def edit_ranges(self, ranges: list[MacRange]) -> None:
        # Held MACs stay held when ranges change; only future allocations see the new ranges.
        self.ranges = RangeSet(ranges)

    @rule(cursor=st.one_of(st.none(), MACS, st.sampled_from(ODD_CURSORS)))
    def move_cursor(self, cursor: int | None) -> None:
        # A persisted cursor may point anywhere after range edits or a restore.
        self.cursor = cursor

    @invariant()
    def index_matches_model(self) -> None:
        assert len(self.index) == len(self.model)
        assert self.index.intervals() == coalesce(self.model)

    @invariant()
    def intervals_sorted_disjoint_coalesced(self) -> None:
        intervals = self.index.intervals()
        for start, end in intervals:
            assert start <= end
        for (_, left_end), (right_start, _) in pairwise(intervals):
            # Strictly more than one apart: adjacent intervals would have been merged.
            assert left_end + 1 < right_start
        assert self.index.memory_bytes() == 16 * len(intervals)

    @invariant()
    def membership_and_counts(self) -> None:
        for mac in (UNIVERSE[0], TAIL_02[-1], HEAD_04[0], UNIVERSE[-1]):
            assert (mac in self.index) == (mac in self.model)
        lo, hi = TAIL_02[16], HEAD_04[16]
        assert self.index.count_in(lo, hi) == sum(1 for v in self.model if lo <= v <= hi)


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings.get_profile(_PROFILE)
