"""Write synthetic engine-backup archives (4.4 schema, plain SQL dump), for benchmarks.

The dump has pg_dump's plain layout: its header, then one ``COPY … FROM stdin`` block per table
in pg_dump's order (alphabetical), rows in COPY text format. Besides the tables the importer
reads, an ``audit_log`` table of ``filler_rows`` rows stands for the bulk of a real engine
database that the reader must skip. The archive is packed like ``engine-backup --small-size``:
a tar.xz with ``version``, ``config``, ``sha256sum``, ``files`` and ``db/engine_backup.db``
(the dump through xz). Ids and MACs come from counters, so the same arguments give the same
archive.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
from collections.abc import Iterator
from pathlib import Path

from manager.core.mac import format_mac_int
from plugins.ovirt.generate import DEFAULT_MAC_START, generated_id

DEFAULT_POOL_ID = "58ca604b-017d-0374-0220-00000000014e"
_HEADER = """--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

"""


def _copy(table: str, columns: list[str], rows: Iterator[list[str]]) -> Iterator[str]:
    yield f"COPY public.{table} ({', '.join(columns)}) FROM stdin;\n"
    for row in rows:
        yield "\t".join(row) + "\n"
    yield "\\.\n\n"


def dump_lines(
    *, vms: int, nics_per_vm: int, filler_rows: int = 0, mac_start: int = DEFAULT_MAC_START
) -> Iterator[str]:
    """The lines of a plain engine database dump with ``vms`` VMs of ``nics_per_vm`` NICs."""
    dc = generated_id("dc", 0)
    cluster = generated_id("cluster", 0)
    last = mac_start + max(vms * nics_per_vm - 1, 0)
    yield _HEADER
    yield from _copy(
        "audit_log",
        ["audit_log_id", "log_time", "message"],
        (
            [str(i), "2026-01-01 00:00:00+00", f"User admin@internal logged in.\\t#{i}"]
            for i in range(filler_rows)
        ),
    )
    yield from _copy(
        "cluster",
        ["cluster_id", "name", "description", "storage_pool_id", "mac_pool_id"],
        iter([[cluster, "Default", "The default server cluster", dc, DEFAULT_POOL_ID]]),
    )
    yield from _copy(
        "mac_pool_ranges",
        ["mac_pool_id", "from_mac", "to_mac"],
        iter([[DEFAULT_POOL_ID, format_mac_int(mac_start), format_mac_int(last)]]),
    )
    yield from _copy(
        "mac_pools",
        ["id", "name", "description", "allow_duplicate_mac_addresses", "default_pool"],
        iter([[DEFAULT_POOL_ID, "Default", "Default MAC pool", "f", "t"]]),
    )
    yield from _copy(
        "storage_pool",
        ["id", "name", "description", "storage_pool_type", "status"],
        iter([[dc, "Default", "The default Data Center", "\\N", "1"]]),
    )
    yield from _copy(
        "vm_interface",
        ["id", "vm_guid", "mac_addr", "name", "speed", "type", "linked", "vnic_profile_id"],
        (
            [
                generated_id("nic", n * nics_per_vm + i),
                generated_id("vm", n),
                format_mac_int(mac_start + n * nics_per_vm + i),
                f"nic{i + 1}",
                "10000",
                "3",
                "t",
                "\\N",
            ]
            for n in range(vms)
            for i in range(nics_per_vm)
        ),
    )
    yield from _copy(
        "vm_static",
        ["vm_guid", "vm_name", "mem_size_mb", "cluster_id", "entity_type", "description"],
        (
            [generated_id("vm", n), f"vm-{n}", "1024", cluster, "VM", "generated\\nVM"]
            for n in range(vms)
        ),
    )
    yield "--\n-- PostgreSQL database dump complete\n--\n\n"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def pack_engine_backup(dump: bytes, path: Path, *, compression: str = "xz") -> Path:
    """Write ``dump`` as engine-backup packs its database dump: a tar (``compression`` ``xz``,
    ``gz``, ``bz2`` or ``""``) with ``version``, ``os_version``, ``config``, ``files``, the
    ``db`` folder holding ``engine_backup.db``, and ``sha256sum``."""
    files = io.BytesIO()
    with tarfile.open(fileobj=files, mode="w:xz") as inner:
        _add(inner, "etc/ovirt-engine/engine.conf.d/10-setup-database.conf", b"ENGINE_DB=x\n")
    members = {
        "./version": b"4.5.6\n",
        "./os_version": b"el9\n",
        "./config": b"DB_DUMP_FORMAT=plain\n",
        "./files": files.getvalue(),
        "./db/engine_backup.db": dump,
    }
    checksums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items()
    )
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode=mode) as archive:  # type: ignore[call-overload]
        folder = tarfile.TarInfo("./db")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in [*members.items(), ("./sha256sum", checksums.encode())]:
            _add(archive, name, data)
    return path


def write_engine_backup(path: Path, *, vms: int, nics_per_vm: int, filler_rows: int = 0) -> Path:
    """Write an ``engine-backup --small-size`` style archive (tar.xz holding the plain dump
    through xz) to ``path`` and return it."""
    packed = io.BytesIO()
    with lzma.LZMAFile(packed, "wb", preset=1) as out:
        for line in dump_lines(vms=vms, nics_per_vm=nics_per_vm, filler_rows=filler_rows):
            out.write(line.encode())
    return pack_engine_backup(packed.getvalue(), path, compression="xz")


__all__ = ["DEFAULT_POOL_ID", "dump_lines", "pack_engine_backup", "write_engine_backup"]
