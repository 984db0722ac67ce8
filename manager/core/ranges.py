"""Inclusive MAC ranges and ordered sets of disjoint ranges.

A range's size is the number of *unicast* addresses in it: a range that spans several first
octets skips the multicast blocks (odd first octet) inside it, and nothing here ever yields one.
Every size computation is closed-form, so cost does not grow with the size of a range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NoReturn

from manager.core.errors import InvalidMac, InvalidRange, RangeOverlap
from manager.core.mac import (
    MAC_MAX,
    OCTET_BLOCK,
    MacAddress,
    format_mac_int,
    is_multicast_int,
    parse_mac,
)


def unicast_below(n: int) -> int:
    """Number of unicast addresses in ``[0, n)``."""
    blocks, rest = divmod(n, OCTET_BLOCK)
    count = ((blocks + 1) // 2) * OCTET_BLOCK
    if blocks % 2 == 0:
        count += rest
    return count


def unicast_count(start: int, end: int) -> int:
    """Number of unicast addresses in the inclusive interval ``[start, end]``."""
    if end < start:
        return 0
    return unicast_below(end + 1) - unicast_below(start)


def next_unicast(value: int) -> int:
    """The smallest unicast address ``>= value`` (may exceed the MAC space)."""
    if is_multicast_int(value):
        return ((value >> 40) + 1) << 40
    return value


def prev_unicast(value: int) -> int:
    """The largest unicast address ``<= value`` (``-1`` when there is none)."""
    if is_multicast_int(value):
        return ((value >> 40) << 40) - 1
    return value


@dataclass(frozen=True, order=True, slots=True)
class MacRange:
    """An inclusive range ``[start, end]`` with unicast, non-zero bounds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if isinstance(bound, bool) or not isinstance(bound, int) or not 0 <= bound <= MAC_MAX:
                raise InvalidRange(f"Range bound {bound!r} is not a 48-bit MAC address.")
        if self.start > self.end:
            raise InvalidRange(
                f"Range {format_mac_int(self.start)}-{format_mac_int(self.end)} ends before it "
                "starts: the start must not be greater than the end.",
                details={"start": format_mac_int(self.start), "end": format_mac_int(self.end)},
            )
        for name, bound in (("start", self.start), ("end", self.end)):
            if bound == 0:
                raise InvalidRange(
                    f"Range {name} 00:00:00:00:00:00 is the all-zero MAC, which is never handed "
                    "out: start the range at a unicast address.",
                    field=name,
                )
            if is_multicast_int(bound):
                raise InvalidRange(
                    f"Range {name} {format_mac_int(bound)} is a multicast address; both bounds "
                    "of a range must be unicast (even first octet).",
                    field=name,
                    details={name: format_mac_int(bound)},
                )

    @classmethod
    def parse(cls, start: object, end: object) -> MacRange:
        """Build a range from two textual MACs, naming the bad bound in the error."""
        bounds: list[int] = []
        for name, value in (("start", start), ("end", end)):
            try:
                bounds.append(parse_mac(value).value)
            except InvalidMac as exc:
                raise InvalidRange(f"Range {name}: {exc.message}", field=name) from exc
        return cls(bounds[0], bounds[1])

    @classmethod
    def parse_text(cls, text: str) -> MacRange:
        """Parse ``START-END``; hyphenated MAC forms are split where both halves parse.

        Spaces around the bounds are allowed here (``START - END``), unlike in a single MAC.
        """
        if not isinstance(text, str):
            raise InvalidRange(f"{text!r} is not a range: write START-END.")
        text = text.strip()
        candidates = []
        for i, char in enumerate(text):
            if char != "-":
                continue
            try:
                candidates.append((parse_mac(text[:i].strip()), parse_mac(text[i + 1 :].strip())))
            except InvalidMac:
                continue
        if len(candidates) != 1:
            raise InvalidRange(
                f"'{text}' is not a range: write START-END, e.g. "
                "02:00:00:00:00:00-02:00:00:ff:ff:ff."
            )
        first, last = candidates[0]
        return cls(first.value, last.value)

    @property
    def size(self) -> int:
        """Number of unicast addresses in the range."""
        return unicast_count(self.start, self.end)

    @property
    def first(self) -> MacAddress:
        return MacAddress(self.start)

    @property
    def last(self) -> MacAddress:
        return MacAddress(self.end)

    def __contains__(self, mac: object) -> bool:
        if isinstance(mac, bool) or not isinstance(mac, MacAddress | int):
            return False  # bools are ints, but True is not the MAC 00:00:00:00:00:01
        return self.start <= int(mac) <= self.end

    def overlaps(self, other: MacRange) -> bool:
        return self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return f"{format_mac_int(self.start)}-{format_mac_int(self.end)}"


class RangeSet(Sequence[MacRange]):
    """The ranges of one pool: sorted by start and pairwise disjoint."""

    __slots__ = ("_ranges", "_starts")

    def __init__(self, ranges: Iterable[MacRange] = ()) -> None:
        ordered = sorted(ranges)
        if any(left.overlaps(right) for left, right in pairwise(ordered)):
            _raise_overlaps(ordered)
        self._ranges: tuple[MacRange, ...] = tuple(ordered)
        self._starts = [r.start for r in self._ranges]

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._ranges[index]

    def __len__(self) -> int:
        return len(self._ranges)

    def __iter__(self) -> Iterator[MacRange]:
        return iter(self._ranges)

    def __repr__(self) -> str:
        return f"RangeSet([{', '.join(str(r) for r in self._ranges)}])"

    @property
    def size(self) -> int:
        return sum(r.size for r in self._ranges)

    def find(self, mac: int | MacAddress) -> MacRange | None:
        """The range that contains ``mac``, if any."""
        from bisect import bisect_right

        value = int(mac)
        i = bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ranges[i].end:
            return self._ranges[i]
        return None

    def __contains__(self, mac: object) -> bool:
        if isinstance(mac, MacRange):
            return mac in self._ranges
        if isinstance(mac, MacAddress | int) and not isinstance(mac, bool):
            return self.find(mac) is not None
        return False


def _raise_overlaps(ordered: list[MacRange]) -> NoReturn:
    """Raise RangeOverlap naming every overlapping pair of ``ordered`` (sorted by start)."""
    pairs: list[tuple[int, int]] = []
    for i, left in enumerate(ordered):
        j = i + 1
        # Sorted by start: only the ranges that start before ``left`` ends can overlap it.
        while j < len(ordered) and ordered[j].start <= left.end:
            pairs.append((i, j))
            j += 1
    involved = sorted({k for pair in pairs for k in pair})
    raise RangeOverlap(
        " ".join(f"Range {ordered[i]} overlaps range {ordered[j]}." for i, j in pairs)
        + " Ranges of one pool must not overlap.",
        field="ranges",
        details={
            "ranges": [str(ordered[k]) for k in involved],
            "conflicts": [
                {"range": str(ordered[i]), "overlaps": str(ordered[j])} for i, j in pairs
            ],
        },
    )


def find_overlaps(
    candidates: Iterable[MacRange], existing: Iterable[tuple[str, MacRange]]
) -> list[tuple[MacRange, str, MacRange]]:
    """Every (candidate, owner label, existing range) pair that overlaps."""
    existing = list(existing)
    return [
        (candidate, label, other)
        for candidate in candidates
        for label, other in existing
        if candidate.overlaps(other)
    ]


__all__ = [
    "MacRange",
    "RangeSet",
    "find_overlaps",
    "next_unicast",
    "prev_unicast",
    "unicast_below",
    "unicast_count",
]
