"""Build real engine-backup archives: engine tables in a throwaway PostgreSQL, pg_dump, tar.

The tables come from the shared schema excerpt (``samples/ovirt/sql/mac-pools-schema-excerpt.sql``:
``mac_pools``, ``mac_pool_ranges``, ``vm_interface`` and the 4.1 ``cluster.mac_pool_id``
upgrade) plus the columns it documents for ``storage_pool``, the cluster table and
``vm_static``, shaped per engine version:

- 3.6: cluster table ``vds_groups`` (``vds_group_id``), pool per data center, template NICs
  with ``vm_guid`` NULL and ``vmt_guid`` set, unpadded and upper-case legacy MACs;
- 4.0: table renamed ``cluster``, still pool per data center;
- 4.2: ``cluster.mac_pool_id`` (the excerpt's upgrade), ``storage_pool.mac_pool_id`` dropped;
- 4.5: ``vm_interface.vmt_guid`` dropped, ``synced`` added; template NICs use ``vm_guid``.

Each version's database is dumped with pg_dump in custom and plain format and packed like
engine-backup (``version``, ``config``, ``files``, ``sha256sum``, ``db/engine_backup.db``).
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from plugins.ovirt.generate_backup import pack_engine_backup

from .conftest import sample

SCHEMA = "sql/mac-pools-schema-excerpt.sql"
VERSIONS = ("3.6", "4.0", "4.2", "4.5")
DEFAULT_POOL = "58ca604b-017d-0374-0220-00000000014e"
UPGRADED_DEFAULT_POOL = "1f0c9a2e-8d3b-11e5-9b7a-525400a1b2c3"
LAB_POOL = "6a8f7c1e-1111-4c2b-9d3e-000000000001"
DC1, DC2 = "5849b030-626e-47cb-ad90-3ce782d831b3", "7d2f0a4c-2222-4c2b-9d3e-000000000002"
C1, C2, C3 = (
    "b1b2c3d4-0001-4c2b-9d3e-000000000001",
    "b1b2c3d4-0002-4c2b-9d3e-000000000002",
    "b1b2c3d4-0003-4c2b-9d3e-000000000003",
)
WEB, TABBY, EMPTY, BLANK, TPL, ITYPE = (
    "c0000000-0000-4000-8000-000000000001",
    "c0000000-0000-4000-8000-000000000002",
    "c0000000-0000-4000-8000-000000000003",
    "00000000-0000-0000-0000-000000000000",
    "c0000000-0000-4000-8000-0000000000f1",
    "c0000000-0000-4000-8000-0000000000f2",
)
#: Non-ASCII VM name (oVirt allows letters of any script, digits, '.', '_' and '-').
TRICKY_NAME = "db-prod_ünï.ä"
#: A pool description that needs the COPY text escapes: tab, newline, backslash.
TRICKY_DESCRIPTION = "Lab pool\twith tab\nand C:\\path \\N"


def _pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_url() -> str:
    """The test PostgreSQL (libpq form), or skip (fail under MACPOOL_REQUIRE_POSTGRES)."""
    url = os.environ.get("MACPOOL_TEST_POSTGRES_URL", "")
    missing = not url or _pg_bin("pg_dump") is None or _pg_bin("pg_restore") is None
    if missing:
        if os.environ.get("MACPOOL_REQUIRE_POSTGRES"):
            pytest.fail("MACPOOL_REQUIRE_POSTGRES is set but PostgreSQL or pg_dump is missing")
        pytest.skip("needs MACPOOL_TEST_POSTGRES_URL and the PostgreSQL client binaries")
    return url.replace("postgresql+psycopg://", "postgresql://")


def excerpt_statements() -> list[str]:
    """The SQL statements of the shared schema excerpt, comments removed."""
    text = re.sub(r"--[^\n]*", "", sample(SCHEMA).read_text())
    return [s.strip() for s in text.split(";") if s.strip()]


def _excerpt(prefix: str) -> list[str]:
    return [s for s in excerpt_statements() if " ".join(s.split()).startswith(prefix)]


def schema_for(version: str) -> list[str]:
    """DDL of the tables the importer reads, as engine ``version`` had them."""
    old = version in ("3.6", "4.0")
    cluster = "vds_groups" if version == "3.6" else "cluster"
    key = "vds_group_id" if version == "3.6" else "cluster_id"
    ddl = [
        *_excerpt("CREATE TABLE mac_pools"),
        *_excerpt("ALTER TABLE ONLY mac_pools"),
        *_excerpt("CREATE TABLE mac_pool_ranges"),
        *_excerpt("CREATE INDEX idx_mac_pool_ranges"),
        *_excerpt("ALTER TABLE ONLY mac_pool_ranges"),
        "CREATE TABLE storage_pool (id uuid PRIMARY KEY, name varchar(40) NOT NULL, "
        "description varchar(4000), storage_pool_type integer, status integer NOT NULL"
        + (", mac_pool_id uuid NOT NULL REFERENCES mac_pools(id))" if old else ")"),
        # Column positions differ from version to version on purpose.
        f"CREATE TABLE {cluster} ({key} uuid PRIMARY KEY, name varchar(40) NOT NULL, "
        + (
            "description varchar(4000), storage_pool_id uuid, cpu_name varchar(255))"
            if version == "3.6"
            else "cpu_name varchar(255), description varchar(4000), storage_pool_id uuid)"
        ),
        f"CREATE TABLE vm_static (vm_guid uuid PRIMARY KEY, vm_name varchar(255) NOT NULL, "
        f"mem_size_mb integer, description varchar(4000), {key} uuid, "
        "entity_type varchar(32) NOT NULL, is_stateless boolean)",
        *_excerpt("CREATE TABLE vm_interface"),
    ]
    if not old:
        ddl += _excerpt("ALTER TABLE cluster")  # 04_01_0010: cluster.mac_pool_id NOT NULL
    if version == "4.5":
        ddl += [
            "ALTER TABLE vm_interface DROP COLUMN vmt_guid",  # 04_04_0200
            *_excerpt("ALTER TABLE vm_interface ADD COLUMN synced"),  # 04_04_1070
        ]
    # Something the reader must skip: a large table with data that looks like statements.
    ddl.append("CREATE TABLE audit_log (audit_log_id bigint, message text)")
    return ddl


@dataclass(frozen=True)
class Estate:
    """What the test databases hold, to compare the import with."""

    version: str
    default_pool_id: str
    default_ranges: tuple[tuple[str, str], ...]


def estate(version: str) -> Estate:
    if version == "3.6":
        # Upgraded 3.x installs: a random default-pool id and engine-setup's unpadded range.
        return Estate(version, UPGRADED_DEFAULT_POOL, (("00:1A:4A:1:f:00", "00:1a:4a:1:f:ff"),))
    return Estate(version, DEFAULT_POOL, (("56:6f:3c:9e:00:00", "56:6f:3c:9e:ff:ff"),))


def fill(conn: object, version: str) -> None:
    """Insert the test estate in the shape of ``version`` (psycopg connection)."""
    cur = conn.cursor()  # type: ignore[attr-defined]
    old = version in ("3.6", "4.0")
    cluster = "vds_groups" if version == "3.6" else "cluster"
    key = "vds_group_id" if version == "3.6" else "cluster_id"
    shape = estate(version)
    cur.execute(
        "INSERT INTO mac_pools VALUES (%s, 'Default', 'Default MAC pool', false, true), "
        "(%s, 'lab', %s, true, false)",
        (shape.default_pool_id, LAB_POOL, TRICKY_DESCRIPTION),
    )
    for start, end in shape.default_ranges:
        cur.execute(
            "INSERT INTO mac_pool_ranges VALUES (%s, %s, %s)", (shape.default_pool_id, start, end)
        )
    cur.execute(
        "INSERT INTO mac_pool_ranges VALUES (%s, '02:1A:4A:00:00:00', '02:1a:4a:00:00:ff'), "
        "(%s, '02:1a:4a:00:02:ff', '02:1a:4a:00:02:00')",
        (LAB_POOL, LAB_POOL),
    )
    if old:
        cur.execute(
            "INSERT INTO storage_pool (id, name, status, mac_pool_id) VALUES "
            "(%s, 'dc1', 1, %s), (%s, 'dc2', 1, %s)",
            (DC1, shape.default_pool_id, DC2, LAB_POOL),
        )
        cur.execute(
            f"INSERT INTO {cluster} ({key}, name, storage_pool_id) VALUES "
            "(%s, 'c1', %s), (%s, 'c2', %s), (%s, 'c3', NULL)",
            (C1, DC1, C2, DC2, C3),
        )
    else:
        cur.execute(
            "INSERT INTO storage_pool (id, name, status) VALUES (%s, 'dc1', 1), (%s, 'dc2', 1)",
            (DC1, DC2),
        )
        cur.execute(
            "INSERT INTO cluster (cluster_id, name, storage_pool_id, mac_pool_id) VALUES "
            "(%s, 'c1', %s, %s), (%s, 'c2', %s, %s), (%s, 'c3', %s, %s)",
            (C1, DC1, shape.default_pool_id, C2, DC2, LAB_POOL, C3, DC2, shape.default_pool_id),
        )
    cur.execute(
        f"INSERT INTO vm_static (vm_guid, vm_name, {key}, entity_type, description) VALUES "
        "(%s, 'web', %s, 'VM', 'a\\b'), (%s, %s, %s, 'VM', NULL), (%s, 'empty', %s, 'VM', ''), "
        "(%s, 'Blank', NULL, 'TEMPLATE', NULL), (%s, 'rhel9-tpl', %s, 'TEMPLATE', NULL), "
        "(%s, 'Large', NULL, 'INSTANCE_TYPE', NULL)",
        (WEB, C1, TABBY, TRICKY_NAME, C2, EMPTY, C3, BLANK, TPL, C1, ITYPE),
    )
    web_mac1 = "00:1A:4A:01:0F:10" if version == "3.6" else "56:6f:3c:9e:00:10"
    web_mac2 = "00:1a:4a:1:f:11" if version == "3.6" else "56:6f:3c:9e:00:11"
    nics = [
        ("d0000000-0000-4000-8000-000000000001", WEB, web_mac1, "nic1"),
        ("d0000000-0000-4000-8000-000000000002", WEB, web_mac2, "nic2"),
        ("d0000000-0000-4000-8000-000000000003", TABBY, "02:1a:4a:00:00:05", "eth\\0"),
        ("d0000000-0000-4000-8000-000000000004", EMPTY, None, "nic1"),
        ("d0000000-0000-4000-8000-000000000005", EMPTY, "", "nic2"),
    ]
    for nic_id, vm, mac, name in nics:
        cur.execute(
            "INSERT INTO vm_interface (id, vm_guid, mac_addr, name) VALUES (%s, %s, %s, %s)",
            (nic_id, vm, mac, name),
        )
    template_nic = "d0000000-0000-4000-8000-0000000000f1"
    if version == "4.5":
        cur.execute(
            "INSERT INTO vm_interface (id, vm_guid, name) VALUES (%s, %s, 'nic1')",
            (template_nic, TPL),
        )
    else:
        cur.execute(
            "INSERT INTO vm_interface (id, vmt_guid, name) VALUES (%s, %s, 'nic1')",
            (template_nic, TPL),
        )
    cur.execute(
        "INSERT INTO audit_log SELECT i, E'COPY fake (a) FROM stdin;\\n\\\\.\\tline ' || i "
        "FROM generate_series(1, 2000) AS i"
    )
    conn.commit()  # type: ignore[attr-defined]


def _dsn(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def create_engine_db(url: str, version: str) -> str:
    """A fresh database ``engine_<version>`` holding the test estate; returns its URL."""
    import psycopg

    name = "engine_" + version.replace(".", "_")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    target = _dsn(url, name)
    with psycopg.connect(target) as conn:
        for statement in schema_for(version):
            conn.execute(statement)
        fill(conn, version)
    return target


def pg_dump(url: str, out: Path, *, fmt: str) -> Path:
    """``pg_dump`` as engine-backup runs it (``custom`` or ``plain``)."""
    tool = _pg_bin("pg_dump")
    assert tool is not None
    subprocess.run(
        [
            tool,
            "-E",
            "UTF8",
            "--disable-dollar-quoting",
            "--disable-triggers",
            f"--format={fmt}",
            f"--file={out}",
            url,
        ],
        check=True,
        capture_output=True,
    )
    return out


def pack_backup(dump: bytes, out: Path, *, compression: str = "gz") -> Path:
    """An engine-backup archive around ``dump`` (``compression``: gz, bz2, xz or '')."""
    return pack_engine_backup(dump, out, compression=compression)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=1)
