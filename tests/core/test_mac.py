"""MAC parsing: the four accepted forms, lower-case colon output, and netaddr's leniency refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manager.core import (
    InvalidInput,
    InvalidMac,
    MacAddress,
    format_mac_int,
    parse_assignable_mac,
    parse_mac,
)
from manager.core.mac import ASSIGNABLE_MAC_PATTERN, is_multicast_int

EXPECTED = 0x02005E005301


@pytest.mark.parametrize(
    "text",
    [
        "02:00:5e:00:53:01",
        "02:00:5E:00:53:01",
        "02-00-5e-00-53-01",
        "02-00-5E-00-53-01",
        "0200.5e00.5301",
        "0200.5E00.5301",
        "02005e005301",
        "02005E005301",
        "02:00:5e:00:53:01".upper(),
        "02-00-5e-00-53-01".replace("5e", "5E"),
    ],
)
def test_four_forms_accepted_case_insensitively(text: str) -> None:
    mac = parse_mac(text)
    assert mac.value == EXPECTED
    assert str(mac) == "02:00:5e:00:53:01"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "00:00:00:00:00:00"),
        (1, "00:00:00:00:00:01"),
        (0xFFFFFFFFFFFF, "ff:ff:ff:ff:ff:ff"),
        (0xABCDEF012345, "ab:cd:ef:01:23:45"),
    ],
)
def test_output_is_lower_case_colon_form(value: int, text: str) -> None:
    assert format_mac_int(value) == text
    assert str(MacAddress(value)) == text
    assert repr(MacAddress(value)) == f"MacAddress('{text}')"


def test_round_trip_through_every_form() -> None:
    mac = parse_mac("AB-CD-EF-01-23-45")
    assert parse_mac(str(mac)) == mac
    assert parse_mac("abcd.ef01.2345") == mac
    assert parse_mac("ABCDEF012345") == mac


@pytest.mark.parametrize(
    "value",
    [
        # netaddr turns decimal strings and ints into MACs.
        "12",
        "0",
        "1",
        "281474976710655",
        12,
        0,
        # bools are ints to netaddr.
        False,
        True,
        None,
        12.0,
        b"02:00:5e:00:53:01",
        ["02:00:5e:00:53:01"],
        # 64-bit EUIs.
        "02:00:00:00:00:00:00:01",
        "02-00-00-00-00-00-00-01",
        "0200000000000001",
        "0200.0000.0000.0001",
        # Unpadded octets, which netaddr pads.
        "2:0:0:0:0:1",
        "02:0:5e:0:53:1",
        "2-0-5e-0-53-1",
        # Whitespace oddities: none is part of any accepted form.
        "02 00 5e 00 53 01",
        "02: 00:5e:00:53:01",
        "02:00:5e:00:53:01\n",
        "\n02:00:5e:00:53:01",
        " 02:00:5e:00:53:01",
        "02:00:5e:00:53:01 ",
        "\t02-00-5e-00-53-01",
        "02005e005301\r\n",
        "0200.5e00.5301\u00a0",
        "",
        " ",
        # Extra, missing or mixed separators.
        "02::00:5e:00:53:01",
        "02:00:5e:00:53:01:",
        ":02:00:5e:00:53:01",
        "02:00:5e:00:53",
        "02:00-5e:00:53:01",
        "02:00:5e-00:53:01",
        "0200:5e00:5301",
        "02005e-005301",
        "02005e:005301",
        "0200.5e00.5301.",
        "0200..5e00.5301",
        "02.00.5e.00.53.01",
        "02005e0053011",
        "02005e00530",
        # Not hex at all.
        "02:00:5g:00:53:01",
        "0x02005e005301",
        "02:00:5e:00:53:0\u0661",  # Arabic-Indic digit one
    ],
)
def test_lenient_inputs_refused(value: object) -> None:
    with pytest.raises(InvalidMac):
        parse_mac(value)
    with pytest.raises(InvalidMac):
        parse_assignable_mac(value)


def test_invalid_mac_is_invalid_input_and_names_value() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_mac("2:0:0:0:0:1")
    assert "2:0:0:0:0:1" in info.value.message
    assert info.value.reason == "invalid_mac"
    assert info.value.details["value"] == "2:0:0:0:0:1"


def test_non_string_named_in_message() -> None:
    with pytest.raises(InvalidMac) as info:
        parse_mac(False)
    assert "False" in info.value.message


def test_parse_mac_passes_mac_address_through() -> None:
    mac = MacAddress(EXPECTED)
    assert parse_mac(mac) is mac


@pytest.mark.parametrize(
    "text",
    [
        "01:00:5e:00:00:01",  # IPv4 multicast
        "33:33:00:00:00:01",  # IPv6 multicast
        "ff:ff:ff:ff:ff:ff",  # broadcast
        "03-00-00-00-00-00",
        "0100.0000.0000",
    ],
)
def test_multicast_refused_with_value_in_message(text: str) -> None:
    assert parse_mac(text).is_multicast
    with pytest.raises(InvalidMac) as info:
        parse_assignable_mac(text)
    assert text in info.value.message
    assert "multicast" in info.value.message
    assert info.value.details["value"] == text


@pytest.mark.parametrize("text", ["00:00:00:00:00:00", "000000000000", "0000.0000.0000"])
def test_all_zero_refused_with_value_in_message(text: str) -> None:
    assert parse_mac(text).is_zero
    with pytest.raises(InvalidMac) as info:
        parse_assignable_mac(text)
    assert text in info.value.message
    assert "all-zero" in info.value.message


@pytest.mark.parametrize(
    "text", ["02:00:00:00:00:01", "00:1a:4a:16:01:51", "fe:ff:ff:ff:ff:ff", "00:00:00:00:00:01"]
)
def test_assignable_unicast_accepted(text: str) -> None:
    mac = parse_assignable_mac(text)
    assert mac.is_assignable
    assert str(mac) == text


def test_mac_address_properties() -> None:
    mac = MacAddress(0x02005E005301)
    assert mac.is_unicast and not mac.is_multicast
    assert mac.is_locally_administered
    assert not MacAddress(0x001A4A160151).is_locally_administered
    assert int(mac) == EXPECTED
    assert [10, 20, 30][MacAddress(1)] == 20  # __index__


@pytest.mark.parametrize("value", [-1, 1 << 48, True, "02:00:5e:00:53:01", 1.0])
def test_mac_address_constructor_refuses_non_48_bit(value: object) -> None:
    with pytest.raises(InvalidMac):
        MacAddress(value)  # type: ignore[arg-type]


def test_ordering_equality_and_hashing() -> None:
    low, high = MacAddress(1), MacAddress(2)
    assert low < high <= MacAddress(2)
    assert high > low
    assert MacAddress(1) == parse_mac("00:00:00:00:00:01")
    assert len({MacAddress(1), parse_mac("000000000001"), MacAddress(2)}) == 2
    assert MacAddress(1) != 1


def _written_forms(value: int) -> list[str]:
    digits = f"{value:012x}"
    octets = [digits[i : i + 2] for i in range(0, 12, 2)]
    return [
        ":".join(octets),
        "-".join(octets).upper(),
        ".".join(digits[i : i + 4] for i in range(0, 12, 4)),
        digits,
    ]


@given(
    st.one_of(
        st.integers(0, 2**48 - 1),
        st.integers(0, 0xFF),  # near the all-zero MAC
        st.integers(0, 0xFF).map(lambda first: first << 40),  # multicast or not, rest zero
    )
)
def test_assignable_pattern_is_exactly_unicast_and_not_zero(value: int) -> None:
    """The OpenAPI pattern of requested MACs and range bounds says what the services accept."""
    assignable = value != 0 and not is_multicast_int(value)
    for text in _written_forms(value):
        assert bool(re.match(ASSIGNABLE_MAC_PATTERN, text)) is assignable, text


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_format_mac_int_writes_what_netaddr_writes(value: int) -> None:
    from netaddr import mac_unix_expanded
    from netaddr.strategy import eui48

    assert format_mac_int(value) == eui48.int_to_str(value, mac_unix_expanded)


@given(
    st.integers(min_value=0, max_value=2**48 - 1),
    st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_parse_mac_reads_what_netaddr_reads(value: int, upper: list[bool]) -> None:
    """parse_mac converts without netaddr; netaddr's EUI() stays the reference, in every form
    and in any mix of letter cases."""
    from netaddr import EUI

    for text in _written_forms(value):
        digits = iter(upper)
        mixed = "".join(
            (c.upper() if next(digits) else c.lower()) if c.isalnum() else c for c in text
        )
        assert parse_mac(mixed).value == int(EUI(mixed)) == value, mixed
