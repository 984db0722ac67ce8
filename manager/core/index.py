"""The allocator's index over held MACs, and the next-fit cursor policy.

Held MACs are kept as coalesced, sorted, disjoint intervals in two ``array('q')`` columns
(starts and ends). Looking up whether a MAC is held, or the first free MAC at or after a point,
is one binary search per held interval crossed, so its cost depends on the number of held
intervals (logarithmically), never on the size of a range. Memory is 16 bytes per interval:
a pool whose held MACs are contiguous costs almost nothing, a fully fragmented one 16 bytes per MAC.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable

from manager.core.ranges import MacRange, RangeSet, next_unicast


class HeldIndex:
    """A set of held MACs (integers) stored as coalesced intervals."""

    __slots__ = ("_count", "_ends", "_starts")

    def __init__(self) -> None:
        self._starts = array("q")
        self._ends = array("q")
        self._count = 0

    @classmethod
    def from_sorted(cls, macs: Iterable[int]) -> HeldIndex:
        """Build from MACs in ascending order (duplicates are ignored) in one pass."""
        index = cls()
        starts, ends = index._starts, index._ends
        count = 0
        last = -2
        for mac in macs:
            if mac == last:
                continue
            if mac < last:
                raise ValueError("from_sorted() needs MACs in ascending order")
            if mac == last + 1:
                ends[-1] = mac
            else:
                starts.append(mac)
                ends.append(mac)
            last = mac
            count += 1
        index._count = count
        return index

    def __len__(self) -> int:
        return self._count

    @property
    def interval_count(self) -> int:
        return len(self._starts)

    def memory_bytes(self) -> int:
        """Bytes of the interval columns' items: 16 per interval (growth slack not counted)."""
        return (
            self._starts.buffer_info()[1] * self._starts.itemsize
            + self._ends.buffer_info()[1] * self._ends.itemsize
        )

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def _find(self, mac: int) -> int:
        """Index of the interval containing ``mac``, or -1."""
        i = bisect_right(self._starts, mac) - 1
        if i >= 0 and self._ends[i] >= mac:
            return i
        return -1

    def __contains__(self, mac: object) -> bool:
        return isinstance(mac, int) and self._find(mac) >= 0

    def add(self, mac: int) -> bool:
        """Mark ``mac`` held; False when it already was."""
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, mac) - 1
        if i >= 0 and ends[i] >= mac:
            return False
        joins_left = i >= 0 and ends[i] == mac - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == mac + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1]
            del ends[i + 1]
        elif joins_left:
            ends[i] = mac
        elif joins_right:
            starts[i + 1] = mac
        else:
            starts.insert(i + 1, mac)
            ends.insert(i + 1, mac)
        self._count += 1
        return True

    def discard(self, mac: int) -> bool:
        """Mark ``mac`` free; False when it was not held."""
        i = self._find(mac)
        if i < 0:
            return False
        starts, ends = self._starts, self._ends
        start, end = starts[i], ends[i]
        if start == end:
            del starts[i]
            del ends[i]
        elif mac == start:
            starts[i] = mac + 1
        elif mac == end:
            ends[i] = mac - 1
        else:
            ends[i] = mac - 1
            starts.insert(i + 1, mac + 1)
            ends.insert(i + 1, end)
        self._count -= 1
        return True

    def first_free(self, lo: int, hi: int) -> int | None:
        """The smallest unicast MAC in ``[lo, hi]`` that is not held, or None."""
        starts, ends = self._starts, self._ends
        value = next_unicast(lo)
        while value <= hi:
            i = bisect_right(starts, value) - 1
            if i >= 0 and ends[i] >= value:
                value = next_unicast(ends[i] + 1)
                continue
            return value
        return None

    def count_in(self, lo: int, hi: int) -> int:
        """How many held MACs lie in ``[lo, hi]`` (walks the intervals that intersect it)."""
        starts, ends = self._starts, self._ends
        i = max(bisect_right(starts, lo) - 1, 0)
        total = 0
        while i < len(starts) and starts[i] <= hi:
            total += max(0, min(ends[i], hi) - max(starts[i], lo) + 1)
            i += 1
        return total


def next_free_mac(ranges: RangeSet, held: HeldIndex, cursor: int | None) -> int | None:
    """The pool's next MAC under the next-fit cursor policy.

    The first free unicast MAC after ``cursor`` (the last MAC the pool handed out) in address
    order across the pool's ranges, wrapping around once to the first range. ``None`` means the
    pool is exhausted. A released MAC is therefore reused as late as possible.
    """
    if not ranges:
        return None
    start = ranges[0].start if cursor is None else cursor + 1
    ordered: list[MacRange] = list(ranges)
    # Ranges wholly after the cursor, then (wrapping) everything from the first range on.
    for rng in ordered:
        if rng.end < start:
            continue
        found = held.first_free(max(start, rng.start), rng.end)
        if found is not None:
            return found
    for rng in ordered:
        if rng.start >= start:
            break
        found = held.first_free(rng.start, min(rng.end, start - 1))
        if found is not None:
            return found
    return None


__all__ = ["HeldIndex", "next_free_mac"]
