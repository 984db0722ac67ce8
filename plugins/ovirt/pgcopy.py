"""A streaming reader of the ``COPY … FROM stdin`` blocks of a plain-SQL PostgreSQL dump.

``pg_dump --format=plain`` (and ``pg_restore -f -``) write each table's rows as a ``COPY``
statement naming its columns, then one line per row in COPY's text format (fields separated by
tabs, ``\\N`` for NULL, backslash escapes), then a line ``\\.``. Only the tables asked for are
decoded; every other block is skipped with ``bytes.find``, so a dump of gigabytes (audit logs,
snapshot OVFs) is read in fixed-size chunks and never held in memory. Line numbers are counted
so that each row can be named in an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import IO

from plugins.ovirt.errors import InputTooLarge, OvirtExportError

#: Bytes read from the stream at a time.
CHUNK = 1024 * 1024
#: Longest row of a wanted table (an ``vm_static`` row is a few kilobytes).
MAX_ROW_BYTES = 4 * 1024 * 1024
#: Longest statement line outside the COPY data (a ``COPY`` line names every column).
MAX_STATEMENT_BYTES = 64 * 1024

_COPY = re.compile(
    rb'COPY\s+(?:(?:"[^"]+"|[\w$]+)\.)?("(?:[^"]|"")+"|[\w$]+)\s*\((.*)\)\s+FROM\s+stdin;\s*',
    re.IGNORECASE,
)
_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE = {
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"v": b"\v",
}
_END = b"\\."
_NULL = b"\\N"

#: One decoded row field: text, or ``None`` for SQL NULL.
Field = str | None


@dataclass(frozen=True, slots=True)
class CopyBlock:
    """A ``COPY`` statement: the table (without schema) and its column names in order."""

    table: str
    columns: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class CopyRow:
    """One row of a wanted table: its block, its line in the stream, its number in the block."""

    block: CopyBlock
    line: int
    number: int
    fields: tuple[Field, ...]

    def get(self, column: str) -> Field:
        """The field of ``column``; ``None`` when NULL or when the dump has no such column."""
        try:
            return self.fields[self.block.columns.index(column)]
        except ValueError:
            return None


def _identifier(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('""', '"')
    return text.lower()


def _split_columns(raw: bytes) -> tuple[str, ...]:
    # Identifiers are plain words or double-quoted (a quoted name may hold a comma).
    names = re.findall(rb'"(?:[^"]|"")*"|[^,\s][^,]*', raw)
    return tuple(_identifier(n) for n in names)


def _unescape_match(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code[:1] == b"x" and len(code) > 1:
        return bytes([int(code[1:], 16)])
    if code[:1].isdigit() and code[:1] in b"01234567":
        return bytes([int(code, 8) & 0xFF])
    return _SIMPLE.get(code, code)


def unescape(raw: bytes) -> bytes:
    """Decode one field's COPY text escapes (``\\t``, ``\\\\``, octal ``\\123``, ``\\x41``…)."""
    return _ESCAPE.sub(_unescape_match, raw) if b"\\" in raw else raw


def decode_fields(line: bytes) -> list[Field]:
    """Split a COPY data line into fields: ``\\N`` is NULL, escapes are decoded, UTF-8 text.

    Raises ``UnicodeDecodeError`` when a field is not UTF-8 (the caller names the row).
    """
    return [None if raw == _NULL else unescape(raw).decode("utf-8") for raw in line.split(b"\t")]


class CopyReader:
    """Iterate the rows of the wanted tables of a plain dump read from ``stream``.

    ``where(line)`` names a position for errors (e.g. ``file:line``). ``on_bytes(n)`` is
    called with the number of bytes consumed after each chunk (for progress bars). ``blocks``
    lists every COPY statement seen, wanted or not, once the iteration is over.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        tables: Collection[str],
        where: Callable[[int], str],
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._stream = stream
        self._tables = frozenset(tables)
        self._where = where
        self._on_bytes = on_bytes
        self._buf = b""
        self._pos = 0
        self._line = 1  # line number of the byte at self._pos
        self._eof = False
        self.blocks: list[CopyBlock] = []

    # --- buffer handling ------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read one more chunk (dropping what was consumed); False at the end of the stream."""
        if self._eof:
            return False
        chunk = self._stream.read(CHUNK)
        if self._on_bytes is not None:
            self._on_bytes(len(chunk))
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def _error(self, message: str, line: int | None = None) -> OvirtExportError:
        return OvirtExportError(message, source=self._where(self._line if line is None else line))

    def _next_line(self, limit: int) -> bytes | None:
        """The next line without its newline; ``None`` at the end of the stream."""
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                line = self._buf[self._pos : end]
                self._pos = end + 1
                self._line += 1
                return line
            if len(self._buf) - self._pos > limit:
                raise InputTooLarge(
                    f"line {self._line} is longer than {limit} bytes.",
                    source=self._where(self._line),
                    details={"limit": limit},
                )
            if not self._fill():
                if self._pos >= len(self._buf):
                    return None
                line = self._buf[self._pos :]
                self._pos = len(self._buf)
                return line

    def _skip_to(self, needle: bytes) -> bool:
        """Move just past the next ``needle`` (which ends with a newline); False at the end."""
        while True:
            found = self._buf.find(needle, self._pos)
            if found >= 0:
                end = found + len(needle)
                self._line += self._buf.count(b"\n", self._pos, end)
                self._pos = end
                return True
            # Keep the tail that could start a match; count the lines of what is dropped.
            keep = max(self._pos, len(self._buf) - len(needle) + 1)
            self._line += self._buf.count(b"\n", self._pos, keep)
            self._pos = keep
            if not self._fill():
                return False

    # --- statements -----------------------------------------------------------------------

    def _next_copy(self) -> CopyBlock | None:
        """Advance to the next ``COPY`` statement at the start of a line."""
        while True:
            while len(self._buf) - self._pos < len(b"COPY ") and self._fill():
                pass
            at_line_start = self._pos == 0 or self._buf[self._pos - 1 : self._pos] == b"\n"
            if not (at_line_start and self._buf.startswith(b"COPY ", self._pos)):
                if not self._skip_to(b"\nCOPY "):
                    return None
                self._pos -= len(b"COPY ")
            line_no = self._line
            line = self._next_line(MAX_STATEMENT_BYTES)
            if line is None:
                return None
            match = _COPY.fullmatch(line.rstrip(b"\r"))
            if match is None:
                continue  # "COPY" starting a line of something else (e.g. a comment body)
            block = CopyBlock(_identifier(match.group(1)), _split_columns(match.group(2)), line_no)
            self.blocks.append(block)
            return block

    def rows(self) -> Iterator[CopyRow]:
        """Every row of every wanted table, in the order of the stream."""
        while (block := self._next_copy()) is not None:
            if block.table not in self._tables:
                if not self._skip_block(block):
                    return
                continue
            yield from self._block_rows(block)

    def _skip_block(self, block: CopyBlock) -> bool:
        if self._buf.startswith(_END + b"\n", self._pos):
            self._pos += len(_END) + 1
            self._line += 1
            return True
        if self._skip_to(b"\n" + _END + b"\n"):
            return True
        # A dump may end right after "\." with no newline.
        if self._buf[self._pos :].endswith(b"\n" + _END) or self._buf[self._pos :] == _END:
            return True
        raise self._truncated(block)

    def _truncated(self, block: CopyBlock) -> OvirtExportError:
        return self._error(
            f"the dump is truncated: the data of table {block.table} (COPY at line "
            f"{block.line}) has no end marker."
        )

    def _block_rows(self, block: CopyBlock) -> Iterator[CopyRow]:
        number = 0
        width = len(block.columns)
        while True:
            line_no = self._line
            line = self._next_line(MAX_ROW_BYTES)
            if line is None:
                raise self._truncated(block)
            if line == _END:
                return
            number += 1
            try:
                fields = decode_fields(line)
            except UnicodeDecodeError as exc:
                raise self._error(
                    f"row {number} of table {block.table} is not valid UTF-8 ({exc.reason}).",
                    line_no,
                ) from exc
            if len(fields) != width:
                raise self._error(
                    f"row {number} of table {block.table} has {len(fields)} fields; its COPY "
                    f"statement (line {block.line}) names {width} columns.",
                    line_no,
                )
            yield CopyRow(block, line_no, number, tuple(fields))


__all__ = ["CopyBlock", "CopyReader", "CopyRow", "Field", "decode_fields", "unescape"]
