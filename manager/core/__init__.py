"""The pure domain core: MAC values, ranges, the allocator index and the error tree.

Imports nothing but the standard library and netaddr (enforced by import-linter).
"""

from manager.core.errors import *  # noqa: F403
from manager.core.errors import __all__ as _errors_all
from manager.core.index import HeldIndex, next_free_mac
from manager.core.mac import (
    MAC_PATTERN,
    MacAddress,
    format_mac_int,
    parse_assignable_mac,
    parse_mac,
)
from manager.core.ranges import MacRange, RangeSet, find_overlaps

__all__ = [
    *_errors_all,
    "MAC_PATTERN",
    "HeldIndex",
    "MacAddress",
    "MacRange",
    "RangeSet",
    "find_overlaps",
    "format_mac_int",
    "next_free_mac",
    "parse_assignable_mac",
    "parse_mac",
]
