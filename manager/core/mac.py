"""The MAC address value type and its strict parser.

A MAC is a 48-bit integer. Input is accepted case-insensitively in exactly four forms
(``02:00:5e:00:53:01``, ``02-00-5E-00-53-01``, ``0200.5e00.5301``, ``02005e005301``); output is
always lower-case colon form. A strict syntax check comes first, because netaddr (the reference
the conversions are tested against) also accepts decimal integers (``EUI("12")``), booleans and
64-bit EUIs; once a text matched one of the four forms, its twelve hex digits are the value.
"""

from __future__ import annotations

import re
from functools import total_ordering

from manager.core.errors import InvalidMac

MAC_BITS = 48
MAC_MAX = (1 << MAC_BITS) - 1
#: Size of one first-octet block; blocks with an odd first octet are multicast.
OCTET_BLOCK = 1 << 40

#: The accepted textual forms, as one pattern (also published in the OpenAPI document).
MAC_PATTERN = (
    r"^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}|[0-9A-Fa-f]{12})$"
)
_MAC_RE = re.compile(MAC_PATTERN)
#: Deletes the separators of the four forms, leaving the twelve hex digits.
_NO_SEPARATORS = str.maketrans("", "", ":-.")
#: The written forms of a MAC that may be handed out or bound to a NIC: not multicast (the
#: first octet's second digit is even) and not all-zero (some digit is not 0).
ASSIGNABLE_MAC_PATTERN = (
    r"^(?![0:.-]*$)([0-9A-Fa-f][02468AaCcEe](:[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f][02468AaCcEe](-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f][02468AaCcEe][0-9A-Fa-f]{2}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"
    r"|[0-9A-Fa-f][02468AaCcEe][0-9A-Fa-f]{10})$"
)


def is_multicast_int(value: int) -> bool:
    """True when bit 0 of the first octet is set (multicast, including broadcast)."""
    return bool((value >> 40) & 1)


def format_mac_int(value: int) -> str:
    """Lower-case colon form of a 48-bit integer, as netaddr's ``mac_unix_expanded`` writes it.

    Formatted here rather than through netaddr's EUI-48 strategy: it runs several times per
    allocation (four times per NIC of an import) and the strategy's word splitting cost about
    ten times as much as the hex digits themselves.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAC_MAX:
        raise InvalidMac(f"{value!r} is not a 48-bit MAC address.", details={"value": value})
    h = f"{value:012x}"
    return f"{h[0:2]}:{h[2:4]}:{h[4:6]}:{h[6:8]}:{h[8:10]}:{h[10:12]}"


@total_ordering
class MacAddress:
    """An immutable, integer-backed 48-bit MAC address."""

    __slots__ = ("_value",)

    def __init__(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAC_MAX:
            raise InvalidMac(f"{value!r} is not a 48-bit MAC address.", details={"value": value})
        self._value = value

    @property
    def value(self) -> int:
        return self._value

    @property
    def is_multicast(self) -> bool:
        return is_multicast_int(self._value)

    @property
    def is_unicast(self) -> bool:
        return not self.is_multicast

    @property
    def is_zero(self) -> bool:
        return self._value == 0

    @property
    def is_locally_administered(self) -> bool:
        return bool((self._value >> 40) & 0b10)

    @property
    def is_assignable(self) -> bool:
        """Whether the MAC may sit on a NIC: unicast and not all-zero."""
        return self.is_unicast and not self.is_zero

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __str__(self) -> str:
        return format_mac_int(self._value)

    def __repr__(self) -> str:
        return f"MacAddress('{self}')"

    def __hash__(self) -> int:
        return hash(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MacAddress):
            return self._value == other._value
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, MacAddress):
            return self._value < other._value
        return NotImplemented


def parse_mac(value: object) -> MacAddress:
    """Parse one of the four accepted textual forms; anything else raises :class:`InvalidMac`."""
    if isinstance(value, MacAddress):
        return value
    if not isinstance(value, str):
        raise InvalidMac(
            f"{value!r} is not a MAC address: give a string such as '02:00:5e:00:53:01'.",
            details={"value": repr(value)},
        )
    # No strip(): surrounding whitespace is not one of the four forms, and fullmatch() because
    # the pattern's "$" would otherwise let a trailing newline through (as netaddr does).
    if not _MAC_RE.fullmatch(value):
        raise InvalidMac(
            f"'{value}' is not a MAC address: use 02:00:5e:00:53:01, 02-00-5e-00-53-01, "
            "0200.5e00.5301 or 02005e005301.",
            details={"value": value},
        )
    # The pattern admits ASCII hex digits and separators only: what is left is 12 hex digits.
    # netaddr's EUI() did this conversion before; it cost about five times as much (an initial
    # sync parses 10^5 MACs) and is kept as the reference of a property test.
    return MacAddress(int(value.translate(_NO_SEPARATORS), 16))


def parse_assignable_mac(value: object) -> MacAddress:
    """Parse a MAC that is to sit on a NIC: multicast and all-zero addresses are refused."""
    mac = parse_mac(value)
    if mac.is_zero:
        raise InvalidMac(
            f"'{value}' is the all-zero MAC address, which no NIC may use.",
            details={"value": str(value)},
        )
    if mac.is_multicast:
        raise InvalidMac(
            f"'{value}' is a multicast MAC address (bit 0 of the first octet is set); "
            "only unicast addresses can be assigned.",
            details={"value": str(value)},
        )
    return mac


__all__ = [
    "ASSIGNABLE_MAC_PATTERN",
    "MAC_MAX",
    "MAC_PATTERN",
    "OCTET_BLOCK",
    "MacAddress",
    "format_mac_int",
    "is_multicast_int",
    "parse_assignable_mac",
    "parse_mac",
]
