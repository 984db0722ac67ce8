"""engine-backup archives without PostgreSQL: synthetic plain dumps (the layout pg_dump writes),
read through paths and uploads, and hostile or broken archives, each refused with a clear
error before anything is written."""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from manager.db import Database
from plugins.ovirt import pgdump
from plugins.ovirt.backup import is_backup
from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput
from plugins.ovirt.generate import DEFAULT_MAC_START
from plugins.ovirt.generate_backup import DEFAULT_POOL_ID, dump_lines, write_engine_backup
from plugins.ovirt.reader import read_paths, read_upload

from .conftest import tar_bytes
from .factories import counts
from .test_import_channels import _post


def _dump(vms: int = 3, filler_rows: int = 10) -> bytes:
    return "".join(dump_lines(vms=vms, nics_per_vm=2, filler_rows=filler_rows)).encode()


def _backup(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    return tar_bytes({"./version": b"4.5.6\n", **members}, mode=mode)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_synthetic_small_size_backup(tmp_path: Path) -> None:
    path = write_engine_backup(tmp_path / "b.tar.xz", vms=5, nics_per_vm=2, filler_rows=50)
    export = read_paths([path])
    assert [p.id for p in export.pools] == [DEFAULT_POOL_ID]
    assert len(export.vms) == 5 and export.nic_count == 10
    macs = sorted(n.mac for vm in export.vms for n in vm.nics if n.mac is not None)
    assert macs == list(range(DEFAULT_MAC_START, DEFAULT_MAC_START + 10))
    assert export.vms[0].name == "vm-0" and export.vms[0].cluster_name == "Default"
    assert read_upload("b.tar.xz", path.read_bytes()).nic_count == 10


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_archive_compression_is_recognised(tmp_path: Path, mode: str) -> None:
    path = _write(tmp_path, "b", _backup({"./db/engine_backup.db": _dump()}, mode))
    with path.open("rb") as handle:
        assert is_backup(handle) and handle.tell() == 0
    assert len(read_paths([path]).vms) == 3


def test_other_archives_are_not_backups(tmp_path: Path) -> None:
    ova = _write(tmp_path, "a.ova", tar_bytes({"vm.ovf": b"<Envelope/>", "version": b"x"}))
    with ova.open("rb") as handle:
        assert not is_backup(handle)


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"./db/engine_backup.db": b"hello, I am not a dump\n"}, "not a PostgreSQL dump"),
        ({"./db/engine_backup.db": lzma.compress(b"SELECT 1;\n")}, "not a PostgreSQL dump"),
        ({"./config": b"x"}, "holds no db/engine_backup.db"),
    ],
)
def test_not_a_dump(tmp_path: Path, members: dict[str, bytes], words: str) -> None:
    with pytest.raises(OvirtExportError, match=words):
        read_paths([_write(tmp_path, "b.tar.gz", _backup(members))])


def test_a_bare_file_that_is_no_dump_is_not_taken_for_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "engine_backup.db", b"-- just a comment\nSELECT 1;\n")
    with pytest.raises(OvirtExportError, match="not an oVirt export"):
        read_paths([path])


def _tar_with(info: tarfile.TarInfo, *, after_dump: bool) -> bytes:
    buffer = io.BytesIO()
    dump = _dump()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        members = [("./version", b"4.5\n"), ("./db/engine_backup.db", dump)]
        for name, data in members if after_dump else []:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
        if not after_dump:
            for name, data in members:
                member = tarfile.TarInfo(name)
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("after_dump", [False, True])
@pytest.mark.parametrize(
    ("info", "words"),
    [
        (_member("../../etc/cron.d/evil"), "would escape"),
        (_member("/etc/passwd"), "absolute path"),
        (_member("./db/link.db", tarfile.SYMTYPE, "/etc/shadow"), "symbolic link"),
        (_member("./db/hard.db", tarfile.LNKTYPE, "./version"), "hard link"),
        (_member("./db/dev", tarfile.CHRTYPE), "a device"),
    ],
)
def test_hostile_members_refuse_the_whole_archive(
    tmp_path: Path, info: tarfile.TarInfo, words: str, after_dump: bool
) -> None:
    path = _write(tmp_path, "b.tar.gz", _tar_with(info, after_dump=after_dump))
    with pytest.raises(UnsafeInput, match=words):
        read_paths([path])


def test_the_dump_itself_as_a_link_is_refused(tmp_path: Path) -> None:
    info = _member("./db/engine_backup.db", tarfile.SYMTYPE, "/var/lib/pgsql/x")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("./version")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"4.5\n"))
        archive.addfile(info)
    with pytest.raises(UnsafeInput, match="symbolic link"):
        read_paths([_write(tmp_path, "b.tar", buffer.getvalue())])


def test_two_dumps_in_one_archive_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for _ in range(2):
            data = _dump()
            member = tarfile.TarInfo("./db/engine_backup.db")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    with pytest.raises(UnsafeInput, match=r"holds db/engine_backup\.db twice"):
        read_paths([_write(tmp_path, "b.tar", buffer.getvalue())])


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgdump, "RATIO_FLOOR", 1024 * 1024)
    header = b"--\n-- PostgreSQL database dump\n--\n\nCOPY public.audit_log (a) FROM stdin;\n"
    bomb = lzma.compress(header + b"a\n" * (20 * 1024 * 1024), preset=9)
    assert len(bomb) < 20 * 1024 * 1024 // 200
    path = _write(tmp_path, "b.tar.xz", _backup({"./db/engine_backup.db": bomb}, "w:xz"))
    with pytest.raises(UnsafeInput, match="decompression bomb"):
        read_paths([path])
    # The same dump bare (an xz'd engine_backup.db).
    with pytest.raises(UnsafeInput, match="decompression bomb"):
        read_paths([_write(tmp_path, "engine_backup.db", bomb)])


def test_expanded_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgdump, "MAX_EXPANDED_BYTES", 256 * 1024)
    path = _write(tmp_path, "b.tar.gz", _backup({"./db/engine_backup.db": _dump(2000)}))
    with pytest.raises(InputTooLarge, match="expands to more than 262144 bytes"):
        read_paths([path])


def test_truncated_archive(tmp_path: Path) -> None:
    data = _backup({"./db/engine_backup.db": _dump(500)})
    with pytest.raises(OvirtExportError, match="truncated"):
        read_paths([_write(tmp_path, "b.tar.gz", data[: len(data) // 2])])


def test_a_database_older_than_3_6(tmp_path: Path) -> None:
    dump = _dump().replace(b"COPY public.mac_pools ", b"COPY public.vdc_options ")
    with pytest.raises(OvirtExportError, match="no mac_pools table"):
        read_paths([_write(tmp_path, "engine_backup.db", dump)])


def test_a_database_that_is_not_the_engine(tmp_path: Path) -> None:
    dump = b"--\n-- PostgreSQL database dump\n--\n\nCOPY public.users (id) FROM stdin;\n1\n\\.\n"
    with pytest.raises(OvirtExportError, match="not a dump of an oVirt engine database"):
        read_paths([_write(tmp_path, "engine_backup.db", dump)])


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    dump = _dump().replace(
        b"vm_interface (id, vm_guid, mac_addr,", b"vm_interface (id, vm_guid, mac,"
    )
    with pytest.raises(
        OvirtExportError, match=r"table vm_interface \(COPY at line \d+\) has no column mac_addr"
    ):
        read_paths([_write(tmp_path, "engine_backup.db", dump)])


def test_a_bad_boolean_and_a_bad_range_name_their_rows(tmp_path: Path) -> None:
    bad_bool = _dump().replace(b"Default MAC pool\tf\tt", b"Default MAC pool\tmaybe\tt")
    with pytest.raises(
        OvirtExportError, match=r"engine_backup.db:\d+ \(mac_pools row 1\): column allow_duplicate"
    ):
        read_paths([_write(tmp_path, "engine_backup.db", bad_bool)])
    bad_range = _dump().replace(b"\t02:1a:4a:00:00:05\n", b"\tnonsense\n", 1)
    with pytest.raises(
        OvirtExportError, match=r"\(mac_pool_ranges row 1\): MAC pool 'Default': range end"
    ):
        read_paths([_write(tmp_path, "engine_backup.db", bad_range)])


# --- the CLI's progress bars ------------------------------------------------------------


def test_cli_progress_goes_to_stderr_and_json_stays_clean(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    path = write_engine_backup(tmp_path / "b.tar.xz", vms=20, nics_per_vm=2, filler_rows=10)
    shown = cli(str(path), "--progress", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["totals"]["kept"] == 40
    assert "Reading: 0%" in shown.stderr and "Reading: 100%" in shown.stderr
    assert "Importing: 100%" in shown.stderr
    # Not a terminal and no flag: no bar at all.
    quiet = cli(str(path), "--json")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["totals"]["kept"] == 40


# --- the REST API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "status", "words"),
    [
        ({"./db/engine_backup.db": b"not a dump"}, 422, "engine.tar.gz!db/engine_backup.db: not a"),
        ({"./db/engine_backup.db": _dump(), "../evil": b"x"}, 422, "would escape"),
    ],
)
def test_api_refuses_hostile_backups_and_writes_nothing(
    client: FlaskClient,
    db: Database,
    headers: dict[str, dict[str, str]],
    members: dict[str, bytes],
    status: int,
    words: str,
) -> None:
    with db.session() as s:
        before = counts(s)
    response = _post(client, headers["admin"], "engine.tar.gz", _backup(members), dry_run="false")
    assert response.status_code == status, response.get_json()
    assert words in response.get_json()["message"]
    with db.session() as s:
        assert counts(s) == before


def test_api_applies_a_backup(
    client: FlaskClient, db: Database, headers: dict[str, dict[str, str]]
) -> None:
    data = _backup({"./db/engine_backup.db": _dump(vms=4)})
    response = _post(client, headers["admin"], "engine.tar.gz", data, dry_run="false")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["applied"] and response.get_json()["totals"]["kept"] == 8
