"""Reader of ``engine-backup`` archives and bare engine database dumps.

``engine-backup --mode=backup`` writes a tar (gzip by default; xz with ``--small-size``)
holding ``version``, ``config``, ``files``, a checksum list and ``db/engine_backup.db``, the
engine database as a ``pg_dump`` custom-format dump (default) or plain SQL piped through xz
(``--small-size``). This module recognises such an archive (or a bare ``engine_backup.db``) by
content, walks the archive once as a stream (nothing is extracted but a custom dump, which is
copied to a private temporary file for ``pg_restore``), refuses hostile archives the way
:mod:`~plugins.ovirt.archives` does (escaping names, links, devices) and bounds decompression
(:class:`~plugins.ovirt.pgdump.Bounded`). The tables become the usual records
(:mod:`~plugins.ovirt.engine_db`), so the importer treats a backup like any other export.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from plugins.ovirt import xmlsafe
from plugins.ovirt.archives import checked_tar_member, safe_member_name
from plugins.ovirt.engine_db import TABLES, EngineTables
from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput
from plugins.ovirt.pgdump import (
    CUSTOM,
    Bounded,
    Peeked,
    compression_of,
    custom_rows,
    decompressor,
    dump_format,
    plain_rows,
    spill,
)
from plugins.ovirt.records import OvirtExport

#: Where engine-backup puts the engine database dump.
DUMP_MEMBER = "db/engine_backup.db"
#: Top-level members that only engine-backup archives have.
_MARKERS = frozenset({"db", "version", "os_version", "config", "files", "sha256sum", "md5sum"})
_OTHER_EXPORTS = (".ovf", ".xml", ".json", ".ova")
#: Members and expanded bytes looked at to tell an engine-backup archive from other tars.
_SNIFF_MEMBERS = 64
_SNIFF_BYTES = 64 * 1024 * 1024
_HEAD = 512
Progress = Callable[[int, int], None]
_CORRUPT = (tarfile.TarError, EOFError, zlib.error, OSError)


class _Meter:
    """Reports how far into the input file the reading is, in bytes, at most every 0.5 %."""

    def __init__(self, handle: IO[bytes], total: int, progress: Progress | None) -> None:
        self.handle = handle
        self.total = max(total, 1)
        self.progress = progress
        self.step = max(self.total // 200, 1)
        self.last = -self.step

    def tick(self) -> None:
        if self.progress is None:
            return
        done = min(self.handle.tell(), self.total)
        if done - self.last >= self.step:
            self.last = done
            self.progress(done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


def _size(handle: IO[bytes]) -> int:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return size


def _is_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"


def _tar_is_backup(stream: IO[bytes]) -> bool:
    bounded = Bounded(stream, source="", packed=None, limit=_SNIFF_BYTES)
    try:
        with tarfile.open(fileobj=bounded, mode="r|") as archive:  # type: ignore[call-overload]
            for count, info in enumerate(archive, start=1):
                name = safe_member_name(info.name, source="")
                top = name.split("/", 1)[0]
                if top in _MARKERS:
                    return True
                if name.lower().endswith(_OTHER_EXPORTS) or "master/" in name.lower():
                    return False
                if count >= _SNIFF_MEMBERS:
                    return False
    except (OvirtExportError, *_CORRUPT):
        return False  # the archive reader gives the precise error
    return False


def is_backup(handle: IO[bytes]) -> bool:
    """True when a seekable file is an engine-backup archive or a bare PostgreSQL dump (plain,
    compressed or custom format). Leaves the file at its start."""
    try:
        head = handle.read(_HEAD)
        handle.seek(0)
        if dump_format(head):
            return True
        kind = compression_of(head)
        if kind is None:
            return _is_tar(head) and _tar_is_backup(handle)
        try:
            inner = decompressor(kind, handle)
            inner_head = inner.read(_HEAD)
        except (*_CORRUPT, ValueError):
            return False
        if dump_format(inner_head):
            return True
        if not _is_tar(inner_head):
            return False
        handle.seek(0)
        return _tar_is_backup(decompressor(kind, handle))
    finally:
        handle.seek(0)


def read_backup(
    handle: IO[bytes],
    *,
    source: str,
    path: Path | None = None,
    progress: Progress | None = None,
) -> OvirtExport:
    """Read an engine-backup archive or a bare dump (see :func:`is_backup`) from a seekable
    file; ``path`` is the file's own path when it has one (a bare custom dump is then given to
    pg_restore without a copy). ``progress(done, total)`` counts bytes of the file."""
    meter = _Meter(handle, _size(handle), progress)
    head = handle.read(_HEAD)
    handle.seek(0)
    meter.tick()
    try:
        with tempfile.TemporaryDirectory(prefix="macpool-backup-") as tmp:
            kind = compression_of(head)
            stream: IO[bytes] = handle
            if kind is not None:
                stream = Bounded(  # type: ignore[assignment]
                    decompressor(kind, handle),
                    source=source,
                    packed=meter.total,
                    on_read=meter.tick,
                )
                head = stream.read(_HEAD)
                stream = Peeked(head, stream)  # type: ignore[assignment]
            if _is_tar(head):
                export = _read_archive(stream, source=source, tmp=Path(tmp), meter=meter)
            else:
                export = _read_dump(
                    stream,
                    source=source,
                    packed=None,
                    tmp=Path(tmp),
                    meter=meter,
                    path=path if kind is None else None,
                )
    except OvirtExportError:
        raise
    except _CORRUPT as exc:
        raise OvirtExportError(
            f"the backup is truncated or corrupt ({exc or type(exc).__name__}).", source=source
        ) from exc
    meter.finish()
    return export


def _read_archive(stream: IO[bytes], *, source: str, tmp: Path, meter: _Meter) -> OvirtExport:
    export: OvirtExport | None = None
    # Stream mode: one pass, no seeking; every member is checked, even after the dump.
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for count, info in enumerate(archive, start=1):
            if count > xmlsafe.MAX_MEMBERS:
                raise InputTooLarge(
                    f"the archive has more than {xmlsafe.MAX_MEMBERS} members.", source=source
                )
            name = checked_tar_member(info, source=source)
            if name != DUMP_MEMBER:
                continue
            if export is not None:
                raise UnsafeInput(f"the archive holds {DUMP_MEMBER} twice.", source=source)
            member = archive.extractfile(info)
            if member is None:  # pragma: no cover - a regular file always has a stream
                continue
            export = _read_dump(
                member, source=f"{source}!{name}", packed=info.size, tmp=tmp, meter=meter
            )
    if export is None:
        raise OvirtExportError(
            f"the archive holds no {DUMP_MEMBER}: it is not an engine-backup archive of the "
            "engine database.",
            source=source,
        )
    return export


def _read_dump(
    stream: IO[bytes],
    *,
    source: str,
    packed: int | None,
    tmp: Path,
    meter: _Meter,
    path: Path | None = None,
) -> OvirtExport:
    head = stream.read(_HEAD)
    stream = Peeked(head, stream)  # type: ignore[assignment]
    kind = compression_of(head)
    if kind is not None:
        stream = Bounded(  # type: ignore[assignment]
            decompressor(kind, stream), source=source, packed=packed, on_read=meter.tick
        )
        head = stream.read(_HEAD)
        stream = Peeked(head, stream)  # type: ignore[assignment]
        path = None
    fmt = dump_format(head)
    if fmt is None:
        raise OvirtExportError(
            "not a PostgreSQL dump: neither a custom-format dump (magic PGDMP) nor plain SQL "
            "written by pg_dump.",
            source=source,
        )
    tables = EngineTables(source)
    if fmt == CUSTOM:
        dump = path if path is not None else spill(stream, tmp, on_read=meter.tick)
        rows = custom_rows(dump, source=source, tables=TABLES)
    else:
        rows = plain_rows(stream, source=source, tables=TABLES, on_read=meter.tick)
    with rows as (iterator, where, reader):
        for row in iterator:
            tables.add(row, where(row))
        for block in reader.blocks:
            tables.note_block(block)
    return tables.export()


__all__ = ["DUMP_MEMBER", "is_backup", "read_backup"]
