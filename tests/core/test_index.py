"""The held-MAC index (coalesced intervals) and the next-fit cursor policy of next_free_mac."""

from __future__ import annotations

import pytest

from manager.core import HeldIndex, MacRange, RangeSet, next_free_mac

BASE = 0x020000000000


def held(*macs: int) -> HeldIndex:
    """An index holding ``macs`` (any order)."""
    return HeldIndex.from_sorted(sorted(macs))


def one_range(start: int, end: int) -> RangeSet:
    return RangeSet([MacRange(start, end)])


class TestHeldIndex:
    def test_add_and_contains(self) -> None:
        index = HeldIndex()
        assert index.add(BASE + 5)
        assert not index.add(BASE + 5)
        assert BASE + 5 in index
        assert BASE + 4 not in index
        assert "02:00:00:00:00:05" not in index
        assert len(index) == 1

    def test_add_coalesces_left_right_and_both(self) -> None:
        index = HeldIndex()
        for mac in (BASE + 1, BASE + 3):
            index.add(mac)
        assert index.intervals() == [(BASE + 1, BASE + 1), (BASE + 3, BASE + 3)]
        index.add(BASE + 2)  # bridges the two
        assert index.intervals() == [(BASE + 1, BASE + 3)]
        index.add(BASE + 4)  # extends right end
        index.add(BASE + 0)  # extends left end
        assert index.intervals() == [(BASE, BASE + 4)]
        assert len(index) == 5
        assert index.interval_count == 1

    def test_discard_splits_and_trims(self) -> None:
        index = held(*range(BASE, BASE + 10))
        assert index.discard(BASE + 5)
        assert not index.discard(BASE + 5)
        assert index.intervals() == [(BASE, BASE + 4), (BASE + 6, BASE + 9)]
        index.discard(BASE)
        index.discard(BASE + 9)
        assert index.intervals() == [(BASE + 1, BASE + 4), (BASE + 6, BASE + 8)]
        for mac in (BASE + 6, BASE + 7, BASE + 8):
            index.discard(mac)
        assert index.intervals() == [(BASE + 1, BASE + 4)]
        assert len(index) == 4
        assert not index.discard(BASE + 100)

    def test_from_sorted_ignores_duplicates_and_coalesces(self) -> None:
        index = HeldIndex.from_sorted([1, 1, 2, 3, 7, 8, 10])
        assert index.intervals() == [(1, 3), (7, 8), (10, 10)]
        assert len(index) == 6

    def test_from_sorted_refuses_unsorted(self) -> None:
        with pytest.raises(ValueError, match="ascending"):
            HeldIndex.from_sorted([3, 1])

    def test_memory_counts_intervals_not_macs(self) -> None:
        contiguous = HeldIndex.from_sorted(range(BASE, BASE + 1000))
        fragmented = HeldIndex.from_sorted(range(BASE, BASE + 2000, 2))
        assert contiguous.memory_bytes() == 16
        assert fragmented.memory_bytes() == 16 * 1000

    def test_first_free(self) -> None:
        index = held(BASE, BASE + 1, BASE + 3)
        assert index.first_free(BASE, BASE + 10) == BASE + 2
        assert index.first_free(BASE + 3, BASE + 10) == BASE + 4
        assert index.first_free(BASE, BASE + 1) is None
        assert index.first_free(BASE + 7, BASE + 7) == BASE + 7

    def test_first_free_skips_multicast_blocks(self) -> None:
        index = held(0x00FFFFFFFFFE, 0x00FFFFFFFFFF)
        assert index.first_free(0x00FFFFFFFFFE, 0x02FFFFFFFFFF) == 0x020000000000
        assert index.first_free(0x010000000000, 0x01FFFFFFFFFF) is None
        # Held up to a block end, and the next unicast block's head held too.
        index = held(0x02FFFFFFFFFF, 0x040000000000, 0x040000000001)
        assert index.first_free(0x02FFFFFFFFFF, 0x04FFFFFFFFFF) == 0x040000000002

    def test_count_in(self) -> None:
        index = held(*range(BASE, BASE + 10), BASE + 20, BASE + 21, BASE + 30)
        assert index.count_in(BASE, BASE + 100) == 13
        assert index.count_in(BASE + 5, BASE + 20) == 6
        assert index.count_in(BASE + 11, BASE + 19) == 0
        assert index.count_in(BASE + 21, BASE + 21) == 1
        assert index.count_in(0, BASE - 1) == 0
        assert HeldIndex().count_in(0, 1 << 47) == 0


class TestNextFreeMac:
    def test_no_ranges_means_exhausted(self) -> None:
        assert next_free_mac(RangeSet(), HeldIndex(), None) is None

    def test_no_cursor_starts_at_first_range(self) -> None:
        ranges = RangeSet([MacRange(BASE + 100, BASE + 200), MacRange(BASE, BASE + 10)])
        assert next_free_mac(ranges, HeldIndex(), None) == BASE

    def test_first_free_after_cursor(self) -> None:
        ranges = one_range(BASE, BASE + 99)
        index = held(BASE + 11, BASE + 12)
        assert next_free_mac(ranges, index, BASE + 10) == BASE + 13
        # Free MACs before the cursor wait until the wrap.
        assert next_free_mac(ranges, index, BASE + 50) == BASE + 51

    def test_across_ranges_in_address_order(self) -> None:
        ranges = RangeSet([MacRange(BASE + 100, BASE + 101), MacRange(BASE, BASE + 1)])
        index = held(BASE, BASE + 1, BASE + 100)
        # Cursor at the end of the first range: continue in the next one.
        assert next_free_mac(ranges, index, BASE + 1) == BASE + 101
        # Cursor in the gap between the ranges.
        assert next_free_mac(ranges, HeldIndex(), BASE + 50) == BASE + 100

    def test_wraps_once_to_the_start(self) -> None:
        ranges = RangeSet([MacRange(BASE, BASE + 3), MacRange(BASE + 10, BASE + 13)])
        index = held(BASE + 1, BASE + 2, BASE + 3, *range(BASE + 10, BASE + 14))
        assert next_free_mac(ranges, index, BASE + 13) == BASE
        assert next_free_mac(ranges, index, BASE + 11) == BASE
        # Cursor beyond every range.
        assert next_free_mac(ranges, index, 0xFEFFFFFFFFFF) == BASE

    def test_the_cursor_mac_itself_comes_last(self) -> None:
        ranges = one_range(BASE, BASE + 3)
        index = held(BASE, BASE + 1, BASE + 3)
        assert next_free_mac(ranges, index, BASE + 2) == BASE + 2

    def test_none_only_when_nothing_free(self) -> None:
        ranges = RangeSet([MacRange(BASE, BASE + 3), MacRange(BASE + 10, BASE + 10)])
        everything = [BASE, BASE + 1, BASE + 2, BASE + 3, BASE + 10]
        for cursor in (None, BASE - 1, BASE, BASE + 2, BASE + 5, BASE + 10, BASE + 99):
            assert next_free_mac(ranges, held(*everything), cursor) is None
            for free in everything:
                rest = [m for m in everything if m != free]
                assert next_free_mac(ranges, held(*rest), cursor) == free

    def test_multicast_blocks_never_returned(self) -> None:
        ranges = one_range(0x00FFFFFFFFFE, 0x020000000001)
        index = held(0x00FFFFFFFFFE, 0x00FFFFFFFFFF)
        assert next_free_mac(ranges, index, None) == 0x020000000000
        assert next_free_mac(ranges, HeldIndex(), 0x00FFFFFFFFFF) == 0x020000000000
        assert next_free_mac(ranges, HeldIndex(), 0x010000000005) == 0x020000000000
        full = held(0x00FFFFFFFFFE, 0x00FFFFFFFFFF, 0x020000000000, 0x020000000001)
        assert next_free_mac(ranges, full, 0x020000000001) is None

    def test_released_mac_reused_as_late_as_possible(self) -> None:
        ranges = one_range(BASE, BASE + 4)
        index = HeldIndex()
        cursor: int | None = None
        handed: list[int] = []
        for _ in range(3):
            mac = next_free_mac(ranges, index, cursor)
            assert mac is not None
            index.add(mac)
            handed.append(mac)
            cursor = mac
        index.discard(handed[0])  # release BASE
        order = []
        for _ in range(3):
            mac = next_free_mac(ranges, index, cursor)
            assert mac is not None
            index.add(mac)
            order.append(mac)
            cursor = mac
        assert order == [BASE + 3, BASE + 4, BASE]
        assert next_free_mac(ranges, index, cursor) is None

    def test_whole_48_bit_space(self) -> None:
        ranges = one_range(1, 0xFEFFFFFFFFFF)
        index = held(1, 2)
        assert next_free_mac(ranges, index, None) == 3
        assert next_free_mac(ranges, index, 0xFEFFFFFFFFFF) == 3
        assert next_free_mac(ranges, index, 0x00FFFFFFFFFF) == 0x020000000000
