"""engine-backup archives of real PostgreSQL databases shaped like engines 3.6 to 4.5, dumped
with pg_dump in custom and plain format and packed like engine-backup, imported through the
reader, the CLI and the REST API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from werkzeug.datastructures import FileStorage

from manager.app import create_app
from manager.core.actor import Actor, Owner
from manager.db import Database
from manager.services import allocate_mac
from manager.services.auth import create_token
from plugins.ovirt import pgdump
from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.reader import read_paths, read_upload
from plugins.ovirt.records import NoticeKind, OvirtExport

from .engine_backups import (
    C1,
    C2,
    C3,
    DC1,
    DC2,
    LAB_POOL,
    TABBY,
    TRICKY_DESCRIPTION,
    TRICKY_NAME,
    VERSIONS,
    WEB,
    create_engine_db,
    estate,
    pack_backup,
    pg_dump,
    postgres_url,
    xz,
)
from .factories import counts

pytestmark = pytest.mark.postgres

Dumps = dict[str, dict[str, Path]]


@pytest.fixture(scope="module")
def engine_dumps(tmp_path_factory: pytest.TempPathFactory) -> Dumps:
    """Per version: a custom and a plain pg_dump of the test estate."""
    url = postgres_url()
    out = tmp_path_factory.mktemp("engine-dumps")
    dumps: Dumps = {}
    for version in VERSIONS:
        db = create_engine_db(url, version)
        dumps[version] = {
            fmt: pg_dump(db, out / f"{version}.{fmt}", fmt=fmt) for fmt in ("custom", "plain")
        }
    return dumps


def _backup(dumps: Dumps, tmp_path: Path, version: str, kind: str) -> Path:
    """An engine-backup archive as engine-backup writes it: ``custom`` (default: tar.gz of
    a custom dump) or ``small`` (--small-size: tar.xz of the plain dump through xz)."""
    if kind == "custom":
        dump = dumps[version]["custom"].read_bytes()
        return pack_backup(dump, tmp_path / f"engine-{version}.tar.gz", compression="gz")
    dump = xz(dumps[version]["plain"].read_bytes())
    return pack_backup(dump, tmp_path / f"engine-{version}.tar.xz", compression="xz")


def _macs(export: OvirtExport) -> dict[str, list[tuple[str, str | None]]]:
    return {vm.name or vm.id: [(nic.name, nic.mac_text) for nic in vm.nics] for vm in export.vms}


@pytest.mark.parametrize("kind", ["custom", "small"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_and_format_reads_the_same_estate(
    engine_dumps: Dumps, tmp_path: Path, version: str, kind: str
) -> None:
    export = read_paths([_backup(engine_dumps, tmp_path, version, kind)])
    shape = estate(version)
    old = version in ("3.6", "4.0")

    pools = {p.id: p for p in export.pools}
    assert set(pools) == {shape.default_pool_id, LAB_POOL}
    default, lab = pools[shape.default_pool_id], pools[LAB_POOL]
    assert default.default_pool and not default.allow_duplicates
    assert lab.allow_duplicates and lab.description == TRICKY_DESCRIPTION
    assert [str(r) for r in lab.ranges] == [
        "02:1a:4a:00:00:00-02:1a:4a:00:00:ff",
        "02:1a:4a:00:02:00-02:1a:4a:00:02:ff",
    ]
    expected_default = (
        "00:1a:4a:01:0f:00-00:1a:4a:01:0f:ff"
        if version == "3.6"
        else "56:6f:3c:9e:00:00-56:6f:3c:9e:ff:ff"
    )
    assert [str(r) for r in default.ranges] == [expected_default]

    dcs = {d.id: d.mac_pool_id for d in export.data_centers}
    clusters = {c.id: (c.name, c.data_center_id, c.mac_pool_id) for c in export.clusters}
    if old:
        # 3.6-4.0: the data center owns the pool; clusters inherit it.
        assert dcs == {DC1: shape.default_pool_id, DC2: LAB_POOL}
        assert clusters == {C1: ("c1", DC1, None), C2: ("c2", DC2, None), C3: ("c3", None, None)}
    else:
        # 4.1+: clusters own pools; dc2's clusters disagree, so it shows none.
        assert dcs == {DC1: shape.default_pool_id, DC2: None}
        assert clusters == {
            C1: ("c1", DC1, shape.default_pool_id),
            C2: ("c2", DC2, LAB_POOL),
            C3: ("c3", DC2, shape.default_pool_id),
        }

    web_macs = (
        ["00:1a:4a:01:0f:10", "00:1a:4a:01:0f:11"]
        if version == "3.6"
        else ["56:6f:3c:9e:00:10", "56:6f:3c:9e:00:11"]
    )
    assert _macs(export) == {
        "web": [("nic1", web_macs[0]), ("nic2", web_macs[1])],
        TRICKY_NAME: [("eth\\0", "02:1a:4a:00:00:05")],
        "empty": [("nic1", None), ("nic2", None)],
    }
    vms = {vm.id: vm for vm in export.vms}
    assert vms[WEB].cluster_id == C1 and vms[WEB].cluster_name == "c1"
    assert vms[TABBY].cluster_id == C2
    assert "engine_backup.db" in vms[WEB].source and "(vm_static row " in vms[WEB].source

    kinds = [w.kind for w in export.warnings]
    assert kinds.count(NoticeKind.MAC_MISSING) == 2
    assert NoticeKind.RANGE_REVERSED in kinds
    if version == "3.6":
        assert NoticeKind.MAC_PADDING in kinds and NoticeKind.MAC_CASE in kinds
    skipped = " ".join(w.message for w in export.warnings if w.kind is NoticeKind.SKIPPED)
    template_nics = 1 if version == "4.5" else 0
    assert f"Skipped 2 template(s) ('Blank', 'rhel9-tpl') and their {template_nics} NIC(s)" in (
        skipped
    )
    assert "Skipped 1 instance type(s) ('Large')" in skipped
    assert ("vm_guid is NULL" in skipped) is (version != "4.5")
    assert "Snapshots are not VMs" in skipped


@pytest.mark.parametrize("packing", ["tar", "tar.bz2", "bare custom", "bare plain", "bare xz"])
def test_other_packings(engine_dumps: Dumps, tmp_path: Path, packing: str) -> None:
    custom = engine_dumps["4.5"]["custom"].read_bytes()
    plain = engine_dumps["4.5"]["plain"].read_bytes()
    path = tmp_path / "engine_backup.db"
    if packing == "tar":
        path = pack_backup(custom, tmp_path / "b.tar", compression="")
    elif packing == "tar.bz2":
        path = pack_backup(plain, tmp_path / "b.tar.bz2", compression="bz2")
    else:
        path.write_bytes({"bare custom": custom, "bare plain": plain}.get(packing, xz(plain)))
    export = read_paths([path])
    assert sorted(_macs(export)) == sorted(["web", TRICKY_NAME, "empty"])
    # An upload reads the same.
    assert _macs(read_upload(path.name, path.read_bytes())) == _macs(export)


def test_progress_counts_the_bytes_of_the_backup(engine_dumps: Dumps, tmp_path: Path) -> None:
    path = _backup(engine_dumps, tmp_path, "4.2", "small")
    calls: list[tuple[int, int]] = []
    read_paths([path], progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert all(total == size for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def _broken_db(version: str, statement: str) -> str:
    url = create_engine_db(postgres_url(), version)
    with psycopg.connect(url) as conn:
        conn.execute(statement)
    return url


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_bad_mac_is_named_with_file_row_vm_and_nic(tmp_path: Path, fmt: str) -> None:
    url = _broken_db(
        "4.2",
        f"INSERT INTO vm_interface (id, vm_guid, mac_addr, name) VALUES "
        f"('d0000000-0000-4000-8000-0000000000aa', '{WEB}', 'not-a-mac', 'nic9')",
    )
    dump = pg_dump(url, tmp_path / "dump", fmt=fmt).read_bytes()
    backup = pack_backup(dump, tmp_path / "bad.tar.gz")
    with pytest.raises(OvirtExportError) as caught:
        read_paths([backup])
    message = caught.value.message
    assert message.startswith(f"{backup}!db/engine_backup.db")
    assert "(vm_interface row 7)" in message
    assert "VM 'web', NIC 'nic9': 'not-a-mac' is not a MAC address." in message
    if fmt == "plain":
        line = int(message.split("engine_backup.db:", 1)[1].split(" ", 1)[0])
        assert (
            dump.decode().splitlines()[line - 1].startswith("d0000000-0000-4000-8000-0000000000aa")
        )


def test_custom_dump_without_pg_restore_names_the_package(
    engine_dumps: Dumps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgdump, "find_pg_restore", lambda: None)
    with pytest.raises(OvirtExportError, match="Debian/Ubuntu package postgresql-client"):
        read_paths([_backup(engine_dumps, tmp_path, "4.5", "custom")])
    # A --small-size backup (plain SQL) needs no pg_restore.
    assert len(read_paths([_backup(engine_dumps, tmp_path, "4.5", "small")]).vms) == 3


def test_pg_restore_failure_is_a_clear_error(engine_dumps: Dumps, tmp_path: Path) -> None:
    custom = engine_dumps["4.5"]["custom"].read_bytes()
    path = tmp_path / "engine_backup.db"
    path.write_bytes(custom[: len(custom) // 2])
    with pytest.raises(OvirtExportError, match=r"pg_restore cannot read this custom-format dump"):
        read_paths([path])


def test_a_dump_older_than_3_6_is_refused(tmp_path: Path) -> None:
    url = _broken_db("4.2", "DROP TABLE mac_pool_ranges; DROP TABLE mac_pools CASCADE")
    path = pg_dump(url, tmp_path / "engine_backup.db", fmt="custom")
    with pytest.raises(OvirtExportError, match="no mac_pools table: MAC pools were introduced"):
        read_paths([path])


# --- through the channels -------------------------------------------------------------------


def test_cli_dry_run_apply_and_reimport(
    engine_dumps: Dumps, tmp_path: Path, cli: Callable[..., Any], db: Database
) -> None:
    path = _backup(engine_dumps, tmp_path, "4.2", "custom")
    with db.session() as s:
        before = counts(s)
    dry = cli(str(path), "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)  # --json output stays clean: no progress bar in it
    assert report["dry_run"] and report["totals"]["kept"] == 3 and report["totals"]["new"] == 2
    assert {s["path"] for s in report["scopes"]} == {
        "/dc1",
        "/dc1/c1",
        "/dc2",
        "/dc2/c2",
        "/dc2/c3",
    }
    with db.session() as s:
        assert counts(s) == before
    text = cli(str(path))
    assert "Skipped 2 template(s)" in text.output and "dry run (nothing written)" in text.output
    applied = cli(str(path), "--apply", "--json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.output)["applied"]
    with db.session() as s:
        assert counts(s)["allocations"] == before["allocations"] + 5
    again = json.loads(cli(str(path), "--apply", "--json").output)
    assert again["totals"]["unchanged"] == 5 and again["totals"]["pools_created"] == 0


def test_cli_bad_macs_refused_then_reassigned(
    engine_dumps: Dumps, tmp_path: Path, cli: Callable[..., Any], db: Database
) -> None:
    path = _backup(engine_dumps, tmp_path, "4.5", "small")
    # Someone else already holds web's first MAC.
    with db.session(write=True) as s:
        allocate_mac(
            s,
            Actor("tester"),
            scope="/",
            owner=Owner(kind="device", name="router"),
            interface="eth0",
            mac="56:6f:3c:9e:00:10",
        )
    refused = cli(str(path), "--apply")
    assert refused.exit_code == 1
    assert "REFUSED: 1 NIC(s) have bad MACs" in refused.output
    fixed = cli(str(path), "--apply", "--reassign-bad-macs", "--json")
    assert fixed.exit_code == 0, fixed.output
    (web,) = [vm for vm in json.loads(fixed.output)["vms"] if vm["name"] == "web"]
    assert web["nics"][0]["status"] == "reassigned"
    assert web["nics"][0]["old_mac"] == "56:6f:3c:9e:00:10"


def test_api_imports_an_uploaded_backup(engine_dumps: Dumps, tmp_path: Path, db: Database) -> None:
    path = _backup(engine_dumps, tmp_path, "4.0", "small")
    app = create_app(
        {"database_url": str(db.url), "data_dir": str(tmp_path), "secret_key": "t" * 32},
        database=db,
    )
    with db.session(write=True) as s:
        _, token = create_token(s, Actor("tester"), name="ops", role="operator")
    client = app.test_client()
    with path.open("rb") as handle:
        response = client.post(
            "/api/v1/imports/ovirt",
            data={"file": FileStorage(handle, filename="engine.tar.xz")},
            headers={"Authorization": f"Bearer {token}"},
            content_type="multipart/form-data",
        )
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["dry_run"] and report["totals"]["vms"] == 3
    assert any("Skipped 2 template(s)" in w["message"] for w in report["warnings"])
