"""The single entry point of the oVirt readers: paths or an upload in, an
:class:`~plugins.ovirt.records.OvirtExport` out.

Each input's kind is detected, never trusted from its name alone: a directory is an export
storage domain (``master/vms/<id>/<id>.ovf``) or a folder of export files; a file is an
engine-backup archive or engine database dump (:mod:`~plugins.ovirt.backup`), an archive
(tar, ``.ova``, OVF_STORE, zip) by its magic bytes, else XML (OVF by its ``<Envelope>`` root,
else a REST API export) or JSON by its first character.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from plugins.ovirt import xmlsafe
from plugins.ovirt.api import read_api_json, read_api_tree
from plugins.ovirt.api_tree import xml_tree
from plugins.ovirt.archives import Budget, archive_kind, read_archive
from plugins.ovirt.backup import is_backup, read_backup
from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.ovf import read_ovf_root
from plugins.ovirt.records import Notice, NoticeKind, OvirtExport, merge_exports

Progress = Callable[[int, int], None]

_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_EXPORT_DOMAIN_OVF = re.compile(r"(?:^|/)master/vms/([^/]+)/\1\.ovf$", re.IGNORECASE)
_DOCUMENT_SUFFIXES = (".ovf", ".xml", ".json")
_ARCHIVE_SUFFIXES = (".ova", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".zip")
#: OVF_STORE companions that describe the store, not VMs.
_NOT_EXPORTS = frozenset({"metadata.json", "info.json"})


@dataclass(frozen=True, slots=True)
class _Entry:
    """One document chosen from a directory or archive listing."""

    name: str
    id_hint: str | None


def _id_hint(name: str) -> str | None:
    stem = PurePosixPath(name).name.rsplit(".", 1)[0]
    return stem if _UUID.fullmatch(stem) else None


def _select(names: Sequence[str], *, archives: bool) -> list[_Entry]:
    """Which members of a listing to read. In an export domain only the VM OVFs (templates
    carry no MACs); elsewhere every OVF, XML and JSON document, and nested archives when
    ``archives`` is true."""
    lowered = {n: n.lower() for n in names}
    domain = [n for n in names if _EXPORT_DOMAIN_OVF.search(n)]
    if domain or any("master/vms/" in low for low in lowered.values()):
        return [_Entry(n, _id_hint(n)) for n in sorted(domain)]
    chosen = []
    for name in sorted(names):
        low = lowered[name]
        if PurePosixPath(low).name in _NOT_EXPORTS:
            continue
        if low.endswith(_DOCUMENT_SUFFIXES) or (archives and low.endswith(_ARCHIVE_SUFFIXES)):
            chosen.append(_Entry(name, _id_hint(name) if low.endswith(".ovf") else None))
    return chosen


def _wanted(name: str) -> bool:
    return name.lower().endswith(_DOCUMENT_SUFFIXES)


def read_document(data: bytes, *, source: str, id_hint: str | None = None) -> OvirtExport:
    """Read one OVF, API XML or API JSON document, detected by content."""
    xmlsafe.check_document_size(len(data), source=source)
    start = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"<"):
        root = xmlsafe.parse_xml(data, source=source)
        if xmlsafe.local(root.tag) == "Envelope":
            return read_ovf_root(root, source=source, id_hint=id_hint)
        return read_api_tree(xml_tree(root, source=source), source=source)
    if start.startswith((b"{", b"[")):
        return read_api_json(data, source=source)
    if archive_kind(data[:512]):
        raise OvirtExportError("an archive inside an archive is not read.", source=source)
    raise OvirtExportError(
        "not an oVirt export: neither XML, JSON nor a tar/zip archive.", source=source
    )


def _read_members(fileobj: IO[bytes], *, source: str, budget: Budget) -> OvirtExport:
    members = dict(read_archive(fileobj, source=source, wanted=_wanted, budget=budget))
    entries = _select(list(members), archives=False)
    if not entries:
        raise OvirtExportError("the archive holds no OVF, XML or JSON document.", source=source)
    return merge_exports(
        read_document(members[e.name], source=f"{source}!{e.name}", id_hint=e.id_hint)
        for e in entries
    )


def _read_file(
    path: Path, *, budget: Budget, id_hint: str | None = None, progress: Progress | None = None
) -> OvirtExport:
    source = str(path)
    try:
        with path.open("rb") as handle:
            if is_backup(handle):
                return read_backup(handle, source=source, path=path, progress=progress)
            if progress is not None:
                progress(0, 1)
            if archive_kind(handle.read(512)):
                handle.seek(0)
                return _read_members(handle, source=source, budget=budget)
            xmlsafe.check_document_size(os.fstat(handle.fileno()).st_size, source=source)
            handle.seek(0)
            data = handle.read(xmlsafe.MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise OvirtExportError(f"cannot be read: {exc.strerror or exc}.", source=source) from exc
    budget.take(len(data), source=source)
    return read_document(data, source=source, id_hint=id_hint)


def _list_directory(root: Path) -> tuple[list[str], list[Notice]]:
    names: list[str] = []
    notices: list[Notice] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for file in files:
            full = Path(folder, file)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                notices.append(
                    Notice(
                        f"{root}/{rel}",
                        NoticeKind.SKIPPED,
                        "symbolic link skipped: links are not followed.",
                    )
                )
                continue
            names.append(rel)
            if len(names) > xmlsafe.MAX_MEMBERS:
                raise OvirtExportError(
                    f"the directory holds more than {xmlsafe.MAX_MEMBERS} files.",
                    source=str(root),
                )
    return names, notices


def _plan(paths: Sequence[Path]) -> tuple[list[tuple[Path, str | None]], list[Notice]]:
    items: list[tuple[Path, str | None]] = []
    notices: list[Notice] = []
    for path in paths:
        if path.is_dir():
            names, dir_notices = _list_directory(path)
            notices += dir_notices
            entries = _select(names, archives=True)
            if not entries:
                raise OvirtExportError(
                    "the directory holds no oVirt export (no master/vms/<id>/<id>.ovf, and no "
                    "OVF, XML, JSON or archive file).",
                    source=str(path),
                )
            items += [(path / e.name, e.id_hint) for e in entries]
        elif path.exists():
            items.append((path, None))
        else:
            raise OvirtExportError("no such file or directory.", source=str(path))
    return items, notices


def _nic_name_notices(export: OvirtExport) -> list[Notice]:
    notices = []
    for vm in export.vms:
        names = [nic.name for nic in vm.nics]
        for name in sorted({n for n in names if names.count(n) > 1}):
            notices.append(
                Notice(
                    vm.source,
                    NoticeKind.DUPLICATE_NIC_NAME,
                    f"VM has {names.count(name)} NICs named '{name}'.",
                    vm=vm.label,
                    nic=name,
                )
            )
    return notices


def _finish(parts: Sequence[OvirtExport], notices: list[Notice]) -> OvirtExport:
    merged = merge_exports([*parts, OvirtExport(warnings=tuple(notices))])
    extra = _nic_name_notices(merged)
    return merged.merge(OvirtExport(warnings=tuple(extra))) if extra else merged


def read_paths(paths: Sequence[Path], *, progress: Progress | None = None) -> OvirtExport:
    """Read every given file, archive or directory into one export.

    ``progress(done, total)`` is called before the first document and after each one
    (an archive counts as one document).
    """
    items, notices = _plan([Path(p) for p in paths])
    budget = Budget()
    if len(items) == 1 and progress is not None:
        # One file: an engine backup reports its bytes; any other file is one document.
        path, id_hint = items[0]
        return _finish(
            [_read_file(path, budget=budget, id_hint=id_hint, progress=progress)], notices
        )
    parts = []
    if progress is not None:
        progress(0, len(items))
    for done, (path, id_hint) in enumerate(items, start=1):
        parts.append(_read_file(path, budget=budget, id_hint=id_hint))
        if progress is not None:
            progress(done, len(items))
    return _finish(parts, notices)


def read_upload(filename: str, data: bytes) -> OvirtExport:
    """Read an uploaded export: one document, or a tar/.ova/.tar.gz/zip archive (an OVA, an
    OVF_STORE, an export domain tree or a bundle of API exports)."""
    source = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    upload = io.BytesIO(data)
    if is_backup(upload):
        return _finish([read_backup(upload, source=source)], [])
    budget = Budget()
    if archive_kind(data[:512]):
        return _finish([_read_members(io.BytesIO(data), source=source, budget=budget)], [])
    budget.take(len(data), source=source)
    return _finish([read_document(data, source=source, id_hint=_id_hint(source))], [])


def read_upload_file(filename: str, path: Path, *, progress: Progress | None = None) -> OvirtExport:
    """Read an upload kept in ``path`` as :func:`read_upload` reads its bytes; an engine backup
    is streamed from the file (with ``progress`` in bytes), never loaded whole."""
    source = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    with path.open("rb") as handle:
        if is_backup(handle):
            return _finish([read_backup(handle, source=source, path=path, progress=progress)], [])
        data = handle.read()
    return read_upload(filename, data)


__all__ = ["Progress", "read_document", "read_paths", "read_upload", "read_upload_file"]
