"""Lenient MAC parsing and range normalization, as tolerant as the oVirt engine was.

The core's parser stays strict: it guards what users type today. Legacy oVirt databases hold
what older engines let through (upper case, unpadded octets such as ``00:1a:4a:1:f:00``,
reversed or multicast range bounds, overlapping ranges, empty NIC MACs), and the engine loads
all of it at startup. The importer does the same here, and reports each change as a
:class:`~plugins.ovirt.records.Notice`. Only a value that is no MAC even leniently is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from manager.core.mac import format_mac_int, is_multicast_int
from manager.core.ranges import next_unicast, prev_unicast
from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.records import Notice, NoticeKind, OvirtRange

# Six octets of one or two hex digits, ':' or '-' separated (one separator kind per value),
# the Cisco dotted form, or twelve bare hex digits. Bounded quantifiers only: no backtracking
# blow-up on hostile values.
_SEPARATED = re.compile(r"[0-9A-Fa-f]{1,2}([:-])(?:[0-9A-Fa-f]{1,2}\1){4}[0-9A-Fa-f]{1,2}")
_DOTTED = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
_BARE = re.compile(r"[0-9A-Fa-f]{12}")
_UPPER_HEX = re.compile(r"[A-F]")
#: Longest value worth showing in a message; hostile exports can put megabytes in a MAC field.
_SHOW = 64


class LenientMac(NamedTuple):
    """A leniently parsed MAC: its value and which legacy quirks the text had."""

    value: int
    upper_case: bool
    unpadded: bool


def shown(raw: str) -> str:
    """The raw value as it may appear in a message: truncated when absurdly long."""
    return raw if len(raw) <= _SHOW else raw[:_SHOW] + "…"


def parse_lenient_mac(raw: str) -> LenientMac | None:
    """Parse a MAC the way legacy oVirt stored it; ``None`` when it is no MAC at all.

    Unpadded octets are padded octet by octet (``00:1a:4a:1:f:00`` is ``00:1a:4a:01:0f:00``).
    """
    text = raw.strip()
    if len(text) > 17:
        return None
    upper = bool(_UPPER_HEX.search(text))
    if _SEPARATED.fullmatch(text):
        octets = re.split(r"[:-]", text)
        value = int("".join(o.rjust(2, "0") for o in octets), 16)
        return LenientMac(value, upper, any(len(o) == 1 for o in octets))
    if _DOTTED.fullmatch(text) or _BARE.fullmatch(text):
        return LenientMac(int(text.replace(".", ""), 16), upper, False)
    return None


def _quirk_notices(
    raw: str,
    parsed: LenientMac,
    *,
    source: str,
    what: str,
    vm: str | None = None,
    nic: str | None = None,
    pool: str | None = None,
) -> list[Notice]:
    notices = []
    fixed = format_mac_int(parsed.value)
    if parsed.unpadded:
        notices.append(
            Notice(
                source,
                NoticeKind.MAC_PADDING,
                f"{what} '{shown(raw)}' has unpadded octets; read as {fixed}. (oVirt 3.x "
                f"engines read such a value as {format_mac_int(_engine_reading(raw))}.)",
                vm=vm,
                nic=nic,
                pool=pool,
            )
        )
    if parsed.upper_case:
        notices.append(
            Notice(
                source,
                NoticeKind.MAC_CASE,
                f"{what} '{shown(raw)}' is in upper case; stored as {fixed}.",
                vm=vm,
                nic=nic,
                pool=pool,
            )
        )
    return notices


def _engine_reading(raw: str) -> int:
    # The old engine stripped the separators and read the rest as one hex number (BZ 1286132).
    return int(re.sub(r"[^0-9A-Fa-f]", "", raw) or "0", 16)


def read_nic_mac(
    raw: str | None, *, source: str, vm: str, nic: str
) -> tuple[int | None, list[Notice]]:
    """Normalize a NIC's MAC. Missing, empty, multicast and all-zero MACs give ``None`` (the NIC
    gets a new MAC, as the engine's import does) with a notice; garbage raises."""
    if raw is None or not raw.strip():
        why = "has no MAC address" if raw is None else "has an empty MAC address"
        return None, [
            Notice(
                source, NoticeKind.MAC_MISSING, f"NIC {why}; it will get a new MAC.", vm=vm, nic=nic
            )
        ]
    parsed = parse_lenient_mac(raw)
    if parsed is None:
        raise OvirtExportError(
            f"'{shown(raw)}' is not a MAC address.",
            source=source,
            vm=vm,
            nic=nic,
            details={"value": shown(raw)},
        )
    notices = _quirk_notices(raw, parsed, source=source, what="MAC", vm=vm, nic=nic)
    if parsed.value == 0 or is_multicast_int(parsed.value):
        what = "the all-zero MAC" if parsed.value == 0 else "a multicast MAC"
        notices.append(
            Notice(
                source,
                NoticeKind.MAC_NOT_ASSIGNABLE,
                f"MAC {format_mac_int(parsed.value)} is {what}, which no NIC may use; "
                "the NIC will get a new MAC.",
                vm=vm,
                nic=nic,
            )
        )
        return None, notices
    return parsed.value, notices


def _bound(raw: str | None, *, source: str, pool: str, which: str) -> tuple[int, list[Notice]]:
    parsed = None if raw is None else parse_lenient_mac(raw)
    if raw is None or parsed is None:
        value = "missing" if raw is None else f"'{shown(raw)}', which is not a MAC address"
        raise OvirtExportError(
            f"MAC pool '{pool}': range {which} bound is {value}.",
            source=source,
            details={"pool": pool},
        )
    return parsed.value, _quirk_notices(
        raw, parsed, source=source, what=f"Range {which} bound", pool=pool
    )


def _clip(
    start: int, end: int, *, source: str, pool: str, notices: list[Notice]
) -> OvirtRange | None:
    """Swap reversed bounds, keep clear of the all-zero MAC and clip multicast bounds like the
    engine's ``MacAddressRangeUtils.clipRange``; ``None`` when nothing usable is left."""
    text = f"{format_mac_int(start)}-{format_mac_int(end)}"
    if start > end:
        start, end = end, start
        notices.append(
            Notice(
                source,
                NoticeKind.RANGE_REVERSED,
                f"Range {text} ends before it starts; bounds swapped.",
                pool=pool,
            )
        )
    if start == 0:
        start = 1
        notices.append(
            Notice(
                source,
                NoticeKind.RANGE_ZERO,
                f"Range {text} starts at the all-zero MAC, which is never handed "
                "out; it now starts at 00:00:00:00:00:01.",
                pool=pool,
            )
        )
    clipped_start, clipped_end = next_unicast(start), prev_unicast(end)
    if clipped_start > clipped_end:
        notices.append(
            Notice(
                source,
                NoticeKind.RANGE_DROPPED,
                f"Range {text} contains only multicast addresses, so it is not "
                "usable and was dropped.",
                pool=pool,
            )
        )
        return None
    if (clipped_start, clipped_end) != (start, end):
        notices.append(
            Notice(
                source,
                NoticeKind.RANGE_MULTICAST,
                f"Range {text} has a multicast bound; clipped to "
                f"{format_mac_int(clipped_start)}-{format_mac_int(clipped_end)}.",
                pool=pool,
            )
        )
    return OvirtRange(clipped_start, clipped_end)


def _merge_overlaps(
    ranges: list[OvirtRange], *, source: str, pool: str, notices: list[Notice]
) -> tuple[OvirtRange, ...]:
    # Inclusive overlap merges into the hull (like the engine's DisjointRanges); ranges that are
    # only adjacent stay apart.
    merged: list[OvirtRange] = []
    groups: list[list[OvirtRange]] = []
    for rng in sorted(ranges, key=lambda r: (r.start, r.end)):
        if merged and rng.start <= merged[-1].end:
            merged[-1] = OvirtRange(merged[-1].start, max(merged[-1].end, rng.end))
            groups[-1].append(rng)
        else:
            merged.append(rng)
            groups.append([rng])
    for hull, group in zip(merged, groups, strict=True):
        if len(group) > 1:
            listed = ", ".join(str(r) for r in group)
            notices.append(
                Notice(
                    source,
                    NoticeKind.RANGES_MERGED,
                    f"MAC pool '{pool}' contains overlapping ranges [{listed}]; "
                    f"merged into {hull}.",
                    pool=pool,
                )
            )
    return tuple(merged)


def normalize_ranges(
    raw: Sequence[tuple[str | None, str | None]], *, source: str, pool: str
) -> tuple[tuple[OvirtRange, ...], list[Notice]]:
    """Turn a pool's ``(from, to)`` texts into ordered, disjoint, unicast ranges plus notices."""
    notices: list[Notice] = []
    usable: list[OvirtRange] = []
    for raw_from, raw_to in raw:
        start, start_notices = _bound(raw_from, source=source, pool=pool, which="start")
        end, end_notices = _bound(raw_to, source=source, pool=pool, which="end")
        notices += start_notices + end_notices
        clipped = _clip(start, end, source=source, pool=pool, notices=notices)
        if clipped is not None:
            usable.append(clipped)
    ranges = _merge_overlaps(usable, source=source, pool=pool, notices=notices)
    if not ranges:
        notices.append(
            Notice(
                source,
                NoticeKind.POOL_WITHOUT_RANGES,
                f"MAC pool '{pool}' has no usable range.",
                pool=pool,
            )
        )
    return ranges, notices


__all__ = ["LenientMac", "normalize_ranges", "parse_lenient_mac", "read_nic_mac", "shown"]
