"""Safe reading of tar (plain or compressed; ``.ova``, OVF_STORE) and zip archives.

Nothing is ever extracted to disk: wanted members are read into memory, within bounds.
Still, an archive whose members would escape (``../``, absolute paths) or that holds links or
devices is refused whole, because no legitimate oVirt export contains them and their presence
says the file was crafted. Truncated or corrupt archives are refused with a clear message.
"""

from __future__ import annotations

import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import IO

from plugins.ovirt import xmlsafe
from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput

_TAR_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)

#: A member's name and content.
Member = tuple[str, bytes]


class Budget:
    """Counts the bytes one import reads, against :data:`~plugins.ovirt.xmlsafe.MAX_TOTAL_BYTES`."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, size: int, *, source: str) -> None:
        """Account for ``size`` more bytes; refuse when the import grows past the bound."""
        self.used += size
        if self.used > xmlsafe.MAX_TOTAL_BYTES:
            raise InputTooLarge(
                f"the import reads more than {xmlsafe.MAX_TOTAL_BYTES} bytes in total.",
                source=source,
                details={"limit": xmlsafe.MAX_TOTAL_BYTES},
            )


def archive_kind(head: bytes) -> str | None:
    """``"tar"``, ``"zip"`` or ``None`` from a file's first 512 bytes."""
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith(_TAR_COMPRESSED_MAGIC):
        return "tar"
    return None


def safe_member_name(name: str, *, source: str) -> str:
    """The member's normalized relative name; absolute or escaping names are refused."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise UnsafeInput(f"archive member '{name}' has an absolute path.", source=source)
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeInput(
            f"archive member '{name}' would escape the archive ('..' in its path).",
            source=source,
        )
    return "/".join(parts)


def _count(n: int, *, source: str) -> None:
    if n > xmlsafe.MAX_MEMBERS:
        raise InputTooLarge(
            f"the archive has more than {xmlsafe.MAX_MEMBERS} members.", source=source
        )


def _tar_type(info: tarfile.TarInfo) -> str:
    if info.issym():
        return "a symbolic link"
    if info.islnk():
        return "a hard link"
    if info.ischr() or info.isblk():
        return "a device"
    if info.isfifo():
        return "a FIFO"
    return "not a regular file"


def checked_tar_member(info: tarfile.TarInfo, *, source: str) -> str | None:
    """A tar member's safe name, ``None`` for a directory; links, devices and escaping names
    refuse the whole archive."""
    name = safe_member_name(info.name, source=source)
    if info.isdir():
        return None
    if not info.isreg():
        raise UnsafeInput(
            f"archive member '{name}' is {_tar_type(info)}; only regular files and "
            "directories are accepted.",
            source=source,
        )
    return name


def _read_tar(
    fileobj: IO[bytes], *, source: str, wanted: Callable[[str], bool], budget: Budget
) -> list[Member]:
    head = fileobj.read(512)
    fileobj.seek(0, 2)
    length = fileobj.tell()
    fileobj.seek(0)
    compressed = head.startswith(_TAR_COMPRESSED_MAGIC)
    members: list[Member] = []
    with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
        count = 0
        while (info := archive.next()) is not None:
            count += 1
            _count(count, source=source)
            name = checked_tar_member(info, source=source)
            if name is None:
                continue
            # Plain tars skip unwanted members by seeking, compressed ones by decompressing.
            if not compressed and info.offset_data + info.size > length:
                raise OvirtExportError(
                    f"the archive is truncated (member '{name}' is cut off).", source=source
                )
            if compressed:
                budget.take(info.size, source=source)
            if not wanted(name):
                continue
            member_source = f"{source}!{name}"
            xmlsafe.check_document_size(info.size, source=member_source)
            if not compressed:
                budget.take(info.size, source=source)
            extracted = archive.extractfile(info)
            data = extracted.read() if extracted is not None else b""
            if len(data) != info.size:
                raise OvirtExportError(
                    f"the archive is truncated (member '{name}' is cut off).", source=source
                )
            members.append((name, data))
    return members


def _read_zip(
    fileobj: IO[bytes], *, source: str, wanted: Callable[[str], bool], budget: Budget
) -> list[Member]:
    members: list[Member] = []
    with zipfile.ZipFile(fileobj) as archive:
        infos = archive.infolist()
        _count(len(infos), source=source)
        for info in infos:
            name = safe_member_name(info.filename, source=source)
            if info.is_dir():
                continue
            # Unix zips record the file type in the high bits; others leave them zero.
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise UnsafeInput(
                    f"archive member '{name}' is {kind}; only regular files and directories "
                    "are accepted.",
                    source=source,
                )
            if not wanted(name):
                continue
            member_source = f"{source}!{name}"
            xmlsafe.check_document_size(info.file_size, source=member_source)
            budget.take(info.file_size, source=source)
            with archive.open(info) as stream:
                # The declared size may lie: never read more than the bound allows.
                data = stream.read(xmlsafe.MAX_DOCUMENT_BYTES + 1)
            xmlsafe.check_document_size(len(data), source=member_source)
            members.append((name, data))
    return members


def read_archive(
    fileobj: IO[bytes], *, source: str, wanted: Callable[[str], bool], budget: Budget
) -> list[Member]:
    """Read the wanted members of a tar or zip archive (seekable ``fileobj``), safely."""
    head = fileobj.read(512)
    fileobj.seek(0)
    kind = archive_kind(head)
    reader = _read_zip if kind == "zip" else _read_tar
    try:
        return reader(fileobj, source=source, wanted=wanted, budget=budget)
    except OvirtExportError:
        raise
    except _CORRUPT as exc:
        raise OvirtExportError(
            f"the archive is truncated or corrupt ({exc or type(exc).__name__}).", source=source
        ) from exc


__all__ = [
    "Budget",
    "Member",
    "archive_kind",
    "checked_tar_member",
    "read_archive",
    "safe_member_name",
]
