"""The streaming COPY reader of plain dumps (plugins/ovirt/pgcopy.py): escapes, NULLs, skipped
blocks, line numbers across chunk boundaries, and malformed or oversized input."""

from __future__ import annotations

import io

import pytest

from plugins.ovirt import pgcopy
from plugins.ovirt.errors import InputTooLarge, OvirtExportError
from plugins.ovirt.pgcopy import CopyReader, decode_fields, unescape

DUMP = b"""--
-- PostgreSQL database dump
--

SET client_encoding = 'UTF8';

COPY public.audit_log (audit_log_id, message) FROM stdin;
1\tCOPY public.mac_pools (id) FROM stdin;
2\t\\\\.
3\tline\\nwith newline
\\.

CREATE TABLE x (a int);
COPY mac_pools (id, "name", description, "Odd, Name") FROM stdin;
p1\tDefault\t\\N\tx
p2\tTab\\there\tback\\\\slash \\101\\x42 \\\\N\t\\N
\\.

COPY public.vm_static (vm_guid) FROM stdin;
\\.
"""


def _rows(data: bytes, tables: tuple[str, ...] = ("mac_pools", "vm_static")) -> list:
    reader = CopyReader(io.BytesIO(data), tables=tables, where=lambda line: f"dump:{line}")
    return list(reader.rows())


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain", b"plain"),
        (b"a\\tb", b"a\tb"),
        (b"a\\nb\\rc", b"a\nb\rc"),
        (b"back\\\\slash", b"back\\slash"),
        (b"\\101\\x41\\0", b"AA\x00"),
        (b"\\b\\f\\v", b"\b\f\v"),
        (b"\\N in text", b"N in text"),
        (b"\\q", b"q"),
    ],
)
def test_unescape(raw: bytes, text: bytes) -> None:
    assert unescape(raw) == text


def test_fields_null_and_utf8() -> None:
    assert decode_fields(b"\\N\t\t\xc3\xbc\t\\\\N") == [None, "", "ü", "\\N"]


def test_reads_only_wanted_tables_with_names_columns_and_lines() -> None:
    rows = _rows(DUMP)
    assert [r.block.table for r in rows] == ["mac_pools", "mac_pools"]
    first, second = rows
    assert first.block.columns == ("id", "name", "description", "Odd, Name")
    assert first.block.line == 14
    assert (first.line, first.number) == (15, 1)
    assert first.fields == ("p1", "Default", None, "x")
    assert second.get("name") == "Tab\there"
    assert second.get("description") == "back\\slash AB \\N"
    assert second.get("Odd, Name") is None and second.get("absent") is None


def test_every_block_is_listed_even_empty_and_skipped_ones() -> None:
    reader = CopyReader(io.BytesIO(DUMP), tables=("vm_static",), where=str)
    assert list(reader.rows()) == []
    assert [(b.table, b.line) for b in reader.blocks] == [
        ("audit_log", 7),
        ("mac_pools", 14),
        ("vm_static", 19),
    ]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_chunk_boundaries_change_nothing(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    expected = [(r.line, r.fields) for r in _rows(DUMP)]
    monkeypatch.setattr(pgcopy, "CHUNK", chunk)
    assert [(r.line, r.fields) for r in _rows(DUMP)] == expected
    reader = CopyReader(io.BytesIO(DUMP), tables=("vm_static",), where=str)
    list(reader.rows())
    assert [b.line for b in reader.blocks] == [7, 14, 19]


def test_a_dump_may_end_without_a_newline() -> None:
    data = b"COPY t (a) FROM stdin;\n1\n\\."
    assert [r.fields for r in _rows(data, ("t",))] == [("1",)]
    assert _rows(data, ("other",)) == []


def test_truncated_block_is_named() -> None:
    data = b"\nCOPY public.mac_pools (id) FROM stdin;\np1\n"
    with pytest.raises(
        OvirtExportError, match=r"^dump:4: the dump is truncated: the data of table"
    ):
        _rows(data)
    with pytest.raises(OvirtExportError, match="COPY at line 2"):
        _rows(data, ("other",))


def test_wrong_field_count_names_the_line() -> None:
    data = b"COPY mac_pools (id, name) FROM stdin;\np1\tDefault\np2\n\\.\n"
    with pytest.raises(OvirtExportError) as caught:
        _rows(data)
    assert caught.value.message == (
        "dump:3: row 2 of table mac_pools has 1 fields; its COPY statement (line 1) names 2 "
        "columns."
    )


def test_invalid_utf8_names_the_line() -> None:
    data = b"COPY mac_pools (id) FROM stdin;\n\xff\xfe\n\\.\n"
    with pytest.raises(
        OvirtExportError, match=r"^dump:2: row 1 of table mac_pools is not valid UTF-8"
    ):
        _rows(data)


def test_an_overlong_row_is_refused_but_skipped_tables_may_have_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcopy, "MAX_ROW_BYTES", 100)
    monkeypatch.setattr(pgcopy, "CHUNK", 16)
    long_row = b"x" * 1000
    skipped = b"COPY snapshots (c) FROM stdin;\n" + long_row + b"\n\\.\n"
    assert _rows(skipped + b"COPY mac_pools (id) FROM stdin;\np\n\\.\n") != []
    wanted = b"COPY mac_pools (id) FROM stdin;\n" + long_row + b"\n\\.\n"
    with pytest.raises(InputTooLarge, match="line 2 is longer than 100 bytes"):
        _rows(wanted)


def test_a_huge_skipped_table_streams_through() -> None:
    class Endless(io.RawIOBase):
        """50 MB of one skipped table's rows, produced on the fly."""

        def __init__(self) -> None:
            self.sent = 0
            self.head = b"COPY audit_log (a) FROM stdin;\n"

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            if self.head:
                n = len(self.head)
                buffer[:n], self.head = self.head, b""
                return n
            if self.sent >= 50 * 1024 * 1024:
                tail = b"\\.\nCOPY mac_pools (id) FROM stdin;\nlast\n\\.\n"
                if self.sent == 10**12:
                    return 0
                buffer[: len(tail)] = tail
                self.sent = 10**12
                return len(tail)
            chunk = b"row of text\n" * (len(buffer) // 12)
            buffer[: len(chunk)] = chunk
            self.sent += len(chunk)
            return len(chunk)

    reader = CopyReader(io.BufferedReader(Endless()), tables=("mac_pools",), where=str)
    rows = list(reader.rows())
    assert [r.fields for r in rows] == [("last",)]
    assert rows[0].line > 4_000_000
