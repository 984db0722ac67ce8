"""Inclusive MAC ranges: bounds, unicast size, text parsing, and overlap within a range set."""

from __future__ import annotations

from collections.abc import Container

import pytest

from manager.core import (
    InvalidInput,
    InvalidRange,
    MacAddress,
    MacRange,
    RangeOverlap,
    RangeSet,
    find_overlaps,
)
from manager.core.ranges import next_unicast, prev_unicast, unicast_below, unicast_count

BLOCK = 1 << 40
FULL = MacRange(0x000000000001, 0xFEFFFFFFFFFF)


def brute_unicast_count(start: int, end: int) -> int:
    """Reference size: count non-multicast addresses one by one (small intervals only)."""
    return sum(1 for v in range(start, end + 1) if not (v >> 40) & 1)


def test_range_is_inclusive() -> None:
    rng = MacRange.parse("02:00:00:00:00:00", "02:00:00:00:00:0f")
    assert rng.size == 16
    assert 0x020000000000 in rng
    assert 0x02000000000F in rng
    assert MacAddress(0x02000000000F) in rng
    assert 0x020000000010 not in rng
    assert 0x01FFFFFFFFFF not in rng
    assert "02:00:00:00:00:00" not in rng
    assert True not in MacRange(1, 5)  # a bool is not a MAC, though it is an int
    assert 1 in MacRange(1, 5)
    assert rng.first == MacAddress(0x020000000000)
    assert rng.last == MacAddress(0x02000000000F)


def test_one_mac_range_is_valid() -> None:
    rng = MacRange.parse("02:00:00:00:00:05", "02:00:00:00:00:05")
    assert rng.size == 1
    assert 0x020000000005 in rng
    assert str(rng) == "02:00:00:00:00:05-02:00:00:00:00:05"


def test_reversed_range_refused_naming_both_bounds() -> None:
    with pytest.raises(InvalidRange) as info:
        MacRange.parse("02:00:00:00:00:10", "02:00:00:00:00:0f")
    assert "02:00:00:00:00:10" in info.value.message
    assert "02:00:00:00:00:0f" in info.value.message
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize(
    ("start", "end", "field", "bad"),
    [
        ("01:00:00:00:00:00", "02:00:00:00:00:00", "start", "01:00:00:00:00:00"),
        ("02:00:00:00:00:00", "03:00:00:00:00:00", "end", "03:00:00:00:00:00"),
        ("02:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "end", "ff:ff:ff:ff:ff:ff"),
        ("00:00:00:00:00:00", "02:00:00:00:00:00", "start", "00:00:00:00:00:00"),
    ],
)
def test_multicast_or_zero_bounds_refused(start: str, end: str, field: str, bad: str) -> None:
    with pytest.raises(InvalidRange) as info:
        MacRange.parse(start, end)
    assert info.value.field == field
    assert bad in info.value.message


@pytest.mark.parametrize("bad", [-1, 1 << 48, True, "02:00:00:00:00:00"])
def test_non_integer_bounds_refused(bad: object) -> None:
    with pytest.raises(InvalidRange):
        MacRange(0x020000000000, bad)  # type: ignore[arg-type]


def test_parse_names_the_bad_bound() -> None:
    with pytest.raises(InvalidRange) as info:
        MacRange.parse("02:00:00:00:00:00", "2:0:0:0:0:ff")
    assert info.value.field == "end"
    assert "2:0:0:0:0:ff" in info.value.message


def test_size_skips_multicast_blocks() -> None:
    rng = MacRange.parse("02:00:00:00:00:00", "04:ff:ff:ff:ff:ff")
    assert rng.size == 2 * 2**40


def test_size_partial_blocks_around_multicast() -> None:
    rng = MacRange(0x02FFFFFFFF00, 0x0400000000FF)
    assert rng.size == 0x100 + 0x100


def test_full_48_bit_space() -> None:
    # Every unicast address but the all-zero one: 128 even blocks of 2^40, minus one.
    assert FULL.size == 128 * BLOCK - 1
    assert 0xFEFFFFFFFFFF in FULL
    assert RangeSet([FULL]).size == FULL.size


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (1, 1),
        (1, 300),
        (0x00FFFFFFFFF0, 0x00FFFFFFFFFF),
        (0x00FFFFFFFFF0, 0x01000000000F),  # unicast tail, then multicast head
        (0x01FFFFFFFFF0, 0x02000000000F),  # multicast tail, then unicast head
        (0x01FFFFFFFFF0, 0x01FFFFFFFFFF),  # multicast only
        (0xFEFFFFFFFFF0, 0xFF000000000F),
    ],
)
def test_size_matches_brute_force(start: int, end: int) -> None:
    assert unicast_count(start, end) == brute_unicast_count(start, end)


def test_unicast_below_and_neighbours() -> None:
    assert unicast_below(0) == 0
    assert unicast_below(BLOCK) == BLOCK
    assert unicast_below(2 * BLOCK) == BLOCK  # block 1 is multicast
    assert unicast_below(2 * BLOCK + 5) == BLOCK + 5
    assert unicast_count(5, 4) == 0
    assert next_unicast(0x01FFFFFFFFFF) == 0x020000000000
    assert next_unicast(0x020000000000) == 0x020000000000
    assert next_unicast(0xFF0000000000) == 1 << 48
    assert prev_unicast(0x01FFFFFFFFFF) == 0x00FFFFFFFFFF
    assert prev_unicast(0x010000000000) == 0x00FFFFFFFFFF
    assert prev_unicast(0x020000000000) == 0x020000000000


@pytest.mark.parametrize(
    "text",
    [
        "02:00:00:00:00:00-02:00:00:00:00:ff",
        "02-00-00-00-00-00-02-00-00-00-00-ff",
        "0200.0000.0000-0200.0000.00ff",
        "020000000000-0200000000ff",
        "02:00:00:00:00:00-02-00-00-00-00-ff",
        "02-00-00-00-00-00-02:00:00:00:00:FF",
        "020000000000-0200.0000.00FF",
        "  02:00:00:00:00:00 - 02:00:00:00:00:ff  ",
    ],
)
def test_parse_text_all_forms(text: str) -> None:
    assert MacRange.parse_text(text) == MacRange(0x020000000000, 0x0200000000FF)


@pytest.mark.parametrize(
    "text",
    [
        "02:00:00:00:00:00",
        "02:00:00:00:00:00-",
        "-02:00:00:00:00:00",
        "02:00:00:00:00:00--02:00:00:00:00:ff",
        "02:00:00:00:00:00-02:00:00:00:00:ff-02:00:00:00:01:ff",
        "02:00:00:00:00:00..02:00:00:00:00:ff",
        "12-34",
        "",
    ],
)
def test_parse_text_refuses_non_ranges(text: str) -> None:
    with pytest.raises(InvalidRange):
        MacRange.parse_text(text)


def test_parse_text_refuses_non_string() -> None:
    with pytest.raises(InvalidRange):
        MacRange.parse_text(12)  # type: ignore[arg-type]


def test_parse_text_still_checks_bounds() -> None:
    with pytest.raises(InvalidRange, match="ends before it starts"):
        MacRange.parse_text("02-00-00-00-00-ff-02-00-00-00-00-00")


def test_range_set_sorts_and_finds() -> None:
    b = MacRange(0x040000000000, 0x0400000000FF)
    a = MacRange(0x020000000000, 0x0200000000FF)
    ranges = RangeSet([b, a])
    assert list(ranges) == [a, b]
    assert ranges[0] == a and len(ranges) == 2
    assert ranges.size == 512
    assert ranges.find(0x040000000010) == b
    assert ranges.find(0x030000000000) is None
    assert ranges.find(0x010000000000) is None
    # Through Container[object]: a RangeSet answers for MACs as well as for its ranges.
    container: Container[object] = ranges
    assert 0x0200000000FF in container
    assert MacAddress(0x0200000000FF) in container
    assert 0x020000000100 not in container
    assert a in container
    assert MacRange(0x020000000000, 0x020000000001) not in container
    assert "02:00:00:00:00:00" not in container
    assert True not in container
    assert "02:00:00:00:00:00" in repr(ranges)


def test_identical_ranges_overlap_and_both_are_named() -> None:
    rng = MacRange(0x020000000000, 0x0200000000FF)
    with pytest.raises(RangeOverlap) as info:
        RangeSet([rng, MacRange(0x020000000000, 0x0200000000FF)])
    assert info.value.details["ranges"] == [str(rng), str(rng)]
    assert str(rng) in info.value.message


def test_partial_overlap_names_both_ranges() -> None:
    left = MacRange(0x020000000000, 0x0200000000FF)
    right = MacRange(0x0200000000FF, 0x0200000001FF)
    with pytest.raises(RangeOverlap) as info:
        RangeSet([right, left])
    assert str(left) in info.value.message
    assert str(right) in info.value.message
    assert info.value.reason == "range_overlap"


def test_contained_range_overlaps_even_when_not_neighbours() -> None:
    outer = MacRange(0x020000000000, 0x02000000FFFF)
    with pytest.raises(RangeOverlap):
        RangeSet(
            [
                outer,
                MacRange(0x020000000010, 0x020000000020),
                MacRange(0x020000001000, 0x020000001001),
            ]
        )


def test_every_overlapping_pair_is_named() -> None:
    # DESIGN 3: the overlap error names every range in conflict, not only the first pair.
    a = MacRange(0x020000000000, 0x0200000000FF)
    b = MacRange(0x020000000080, 0x020000000180)
    c = MacRange(0x020000000100, 0x020000000200)
    far = MacRange(0x040000000000, 0x0400000000FF)
    d = MacRange(0x0400000000F0, 0x0400000000F0)
    with pytest.raises(RangeOverlap) as info:
        RangeSet([far, c, b, a, d])
    pairs = [(str(x), str(y)) for x, y in ((a, b), (b, c), (far, d))]
    assert [(p["range"], p["overlaps"]) for p in info.value.details["conflicts"]] == pairs
    assert info.value.details["ranges"] == [str(r) for r in (a, b, c, far, d)]
    for left, right in pairs:
        assert f"Range {left} overlaps range {right}" in info.value.message
    assert str(a) + " overlaps range " + str(c) not in info.value.message


def test_adjacent_ranges_do_not_overlap() -> None:
    left = MacRange(0x020000000000, 0x0200000000FF)
    right = MacRange(0x020000000100, 0x0200000001FF)
    assert not left.overlaps(right)
    assert RangeSet([left, right]).size == 512


def test_find_overlaps_lists_every_conflict() -> None:
    candidate = MacRange(0x020000000080, 0x020000000180)
    existing = [
        ("pool-a", MacRange(0x020000000000, 0x0200000000FF)),
        ("pool-b", MacRange(0x020000000100, 0x0200000001FF)),
        ("pool-c", MacRange(0x020000000200, 0x0200000002FF)),
    ]
    found = find_overlaps([candidate], existing)
    assert found == [(candidate, "pool-a", existing[0][1]), (candidate, "pool-b", existing[1][1])]
