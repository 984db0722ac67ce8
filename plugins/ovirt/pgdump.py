"""PostgreSQL dumps as the oVirt engine writes them: detection, bounded decompression, and the
rows of chosen tables, from a plain-SQL dump (read directly) or a custom-format dump (through
``pg_restore`` from PostgreSQL's client tools).

A dump is recognised by its content, never by its name: a custom dump starts with the magic
``PGDMP``, a plain one with pg_dump's ``-- PostgreSQL database dump`` header; either may be
compressed (``engine-backup --small-size`` pipes the plain dump through xz). Anything else is
refused as "not a PostgreSQL dump". Decompression is bounded in total and in ratio, so a small
file that expands to terabytes (a decompression bomb) is refused early.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path
from typing import IO

from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput
from plugins.ovirt.pgcopy import CopyReader, CopyRow

CUSTOM = "custom"
PLAIN = "plain"
CUSTOM_MAGIC = b"PGDMP"
#: pg_dump's plain-format header (also written by pg_restore -f -).
PLAIN_MARKER = b"-- PostgreSQL database dump"
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
#: Most bytes a backup may expand to (all members of an archive, or one dump).
MAX_EXPANDED_BYTES = 16 * 1024 * 1024 * 1024
#: Above this many expanded bytes, a larger expansion ratio than MAX_RATIO is a bomb.
RATIO_FLOOR = 256 * 1024 * 1024
MAX_RATIO = 200
#: The Debian/Ubuntu package that ships pg_restore.
CLIENT_PACKAGE = "postgresql-client"
#: Characters of pg_restore's error output quoted in a message.
_STDERR_SHOWN = 500
_CORRUPT = (EOFError, OSError, lzma.LZMAError, zlib.error)


def compression_of(head: bytes) -> str | None:
    """``gzip``, ``bzip2``, ``xz`` or ``None`` from a stream's first bytes."""
    return next((kind for magic, kind in _COMPRESSED.items() if head.startswith(magic)), None)


def dump_format(head: bytes) -> str | None:
    """:data:`CUSTOM`, :data:`PLAIN` or ``None`` from the first bytes of an uncompressed dump."""
    if head.startswith(CUSTOM_MAGIC):
        return CUSTOM
    start = head.lstrip(b"\xef\xbb\xbf")
    if start.startswith(b"--") and PLAIN_MARKER in start[:256]:
        return PLAIN
    return None


class Bounded:
    """A read-only stream counting what it yields: more than ``limit`` bytes, or (past the
    floor) more than :data:`MAX_RATIO` times the ``packed`` size, is refused as a bomb.
    ``on_read`` is called after every read (progress)."""

    def __init__(
        self,
        inner: IO[bytes],
        *,
        source: str,
        packed: int | None,
        limit: int | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.source = source
        self.packed = packed
        self.limit = MAX_EXPANDED_BYTES if limit is None else limit
        self.on_read = on_read
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.inner.read(size)
        except _CORRUPT as exc:
            raise OvirtExportError(
                f"the compressed data is truncated or corrupt ({exc or type(exc).__name__}).",
                source=self.source,
            ) from exc
        self.count += len(data)
        if self.count > self.limit:
            raise InputTooLarge(
                f"the backup expands to more than {self.limit} bytes.",
                source=self.source,
                details={"limit": self.limit},
            )
        if self.packed and self.count > RATIO_FLOOR and self.count > self.packed * MAX_RATIO:
            raise UnsafeInput(
                f"{self.packed} compressed bytes expand to more than {self.count} bytes (over "
                f"{MAX_RATIO} times): refused as a decompression bomb.",
                source=self.source,
            )
        if self.on_read is not None:
            self.on_read()
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


def decompressor(kind: str, stream: IO[bytes]) -> IO[bytes]:
    """A streaming decompressor of ``kind`` (see :func:`compression_of`) over ``stream``."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(stream, mode="rb")
    return lzma.LZMAFile(stream, mode="rb")


class Peeked:
    """A stream whose first bytes were already read: yields them first, then the rest."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                more = self._rest.read(-1 if size < 0 else size - len(head))
                return head + more
            head, self._head = self._head[:size], self._head[size:]
            return head
        return self._rest.read(size)

    def readable(self) -> bool:
        return True


def find_pg_restore() -> str | None:
    """``pg_restore`` on the PATH, else the newest one Debian's packages install."""
    found = shutil.which("pg_restore")
    if found:
        return found
    candidates = sorted(
        glob("/usr/lib/postgresql/*/bin/pg_restore"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
    )
    return candidates[-1] if candidates else None


def _row_where(source: str, *, plain: bool) -> Callable[[CopyRow], str]:
    def where(row: CopyRow) -> str:
        if plain:
            return f"{source}:{row.line} ({row.block.table} row {row.number})"
        return f"{source} ({row.block.table} row {row.number})"

    return where


@contextmanager
def plain_rows(
    stream: IO[bytes],
    *,
    source: str,
    tables: Collection[str],
    on_read: Callable[[], None] | None = None,
) -> Iterator[tuple[Iterator[CopyRow], Callable[[CopyRow], str], CopyReader]]:
    """The rows of ``tables`` in a plain dump, with a function naming a row's position."""
    reader = CopyReader(
        stream,
        tables=tables,
        where=lambda line: f"{source}:{line}",
        on_bytes=None if on_read is None else (lambda _n: on_read()),
    )
    yield reader.rows(), _row_where(source, plain=True), reader


@contextmanager
def custom_rows(
    path: Path, *, source: str, tables: Collection[str]
) -> Iterator[tuple[Iterator[CopyRow], Callable[[CopyRow], str], CopyReader]]:
    """The rows of ``tables`` in a custom-format dump file, as ``pg_restore`` writes them."""
    tool = find_pg_restore()
    if tool is None:
        raise OvirtExportError(
            "this is a custom-format PostgreSQL dump (engine-backup's default); reading it "
            f"needs pg_restore, which is not installed. Install PostgreSQL's client tools "
            f"(Debian/Ubuntu package {CLIENT_PACKAGE}), or make the backup with "
            "engine-backup --small-size (plain SQL).",
            source=source,
            details={"package": CLIENT_PACKAGE},
        )
    args = [tool, "--data-only", "--file=-"]
    for table in sorted(tables):
        args += ["-t", table]
    args.append(str(path))
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 (fixed arguments, no shell)
            args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL
        )
        assert process.stdout is not None
        reader = CopyReader(
            process.stdout,
            tables=tables,
            where=lambda line: f"{source} (pg_restore output line {line})",
        )
        try:
            yield _checked(reader, process, errors, source), _row_where(source, plain=False), reader
        finally:
            process.stdout.close()
            if process.poll() is None:  # the rows were not read to the end
                process.kill()
            process.wait()


def _checked(
    reader: CopyReader, process: subprocess.Popen[bytes], errors: IO[bytes], source: str
) -> Iterator[CopyRow]:
    """The reader's rows; pg_restore's failure (if any) as a clear error, also when it made
    its output end in the middle of a table."""
    try:
        yield from reader.rows()
    except OvirtExportError as exc:
        if process.wait() != 0:
            raise _failed(process, errors, source) from exc
        raise
    if process.wait() != 0:
        raise _failed(process, errors, source)


def _failed(process: subprocess.Popen[bytes], errors: IO[bytes], source: str) -> OvirtExportError:
    errors.seek(0)
    text = errors.read(_STDERR_SHOWN * 4).decode("utf-8", errors="replace").strip()
    lines = [ln.removeprefix("pg_restore: ") for ln in text.splitlines() if ln.strip()]
    shown = "; ".join(lines)[:_STDERR_SHOWN] or f"exit status {process.returncode}"
    return OvirtExportError(
        f"pg_restore cannot read this custom-format dump: {shown}.", source=source
    )


def spill(stream: IO[bytes], folder: Path, *, on_read: Callable[[], None] | None = None) -> Path:
    """Copy a (bounded) stream to a new private file in ``folder`` for pg_restore."""
    fd, name = tempfile.mkstemp(prefix="engine-dump-", suffix=".db", dir=folder)
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(1024 * 1024):
            out.write(chunk)
            if on_read is not None:
                on_read()
    return Path(name)


__all__ = [
    "CLIENT_PACKAGE",
    "CUSTOM",
    "MAX_EXPANDED_BYTES",
    "MAX_RATIO",
    "PLAIN",
    "Bounded",
    "Peeked",
    "compression_of",
    "custom_rows",
    "decompressor",
    "dump_format",
    "find_pg_restore",
    "plain_rows",
    "spill",
]
