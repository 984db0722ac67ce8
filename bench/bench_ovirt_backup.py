"""oVirt engine-backup import: dry run of a backup of MACPOOL_BENCH_OVIRT_VMS VMs (default
10,000) with 2 NICs each, its time and its peak memory.

The backup is the synthetic 4.4-shaped engine database of
``plugins.ovirt.generate_backup`` (plus ``audit_log`` filler rows the reader must skip):

- plain: packed like ``engine-backup --small-size`` (tar.xz holding the plain dump through xz);
- custom: when a PostgreSQL is at hand (``MACPOOL_TEST_POSTGRES_URL``, e.g. under
  ``tools/with-postgres.sh``), the same rows are loaded into a database and dumped with
  ``pg_dump --format=custom``, packed like engine-backup's default (tar.gz); read through
  ``pg_restore``.

Each dry run (read the backup + import inside a savepoint, rolled back: what
``macpool import ovirt BACKUP`` does) runs in a fresh child process on a fresh SQLite database;
the child reports its time and its peak resident memory (``ru_maxrss``), so the figure is the
whole process's peak, interpreter and libraries included.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from glob import glob
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import Result, result

VMS = int(os.environ.get("MACPOOL_BENCH_OVIRT_VMS", 10_000))
NICS_PER_VM = 2
FILLER_ROWS = 200_000
#: A second plain backup whose dump is ten times larger: memory must not grow with it.
LARGE_FILLER_ROWS = 2_000_000
#: MacPool's default pool: clear of the generated MACs, which the backup's own pool covers.
DEFAULT_RANGE = "0a:00:00:00:00:00-0a:00:00:ff:ff:ff"
GOAL_S = 15.0
GOAL_MB = 300.0


def _child(backup: str) -> None:
    """Run in a fresh interpreter: one dry run; prints its figures as JSON."""
    from manager.core.actor import Actor
    from manager.db import Base, Database
    from manager.services import bootstrap
    from plugins.ovirt.importer import ImportOptions, import_in_phases
    from plugins.ovirt.reader import read_paths

    with tempfile.TemporaryDirectory(prefix="macpool-bench-backup-db-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'macpool.db'}")
        Base.metadata.create_all(db.engine)
        with db.session(write=True) as session:
            bootstrap(session, default_range=DEFAULT_RANGE)
        began = time.perf_counter()
        export = read_paths([Path(backup)])
        read_s = time.perf_counter() - began
        # As the channels import: a dry run plans in a read transaction and writes nothing.
        report = import_in_phases(db.session, Actor("bench"), export, options=ImportOptions())
        total_s = time.perf_counter() - began
        db.dispose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"read_s": read_s, "total_s": total_s, "peak_kb": peak_kb, **report.totals()}))


def _measure(backup: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_ovirt_backup", "child", str(backup)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["kept"] == VMS * NICS_PER_VM, figures
    return figures


def _pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _custom_backup(plain_dump: bytes, folder: Path) -> Path | None:
    """The same estate through a real PostgreSQL and pg_dump -Fc, packed as tar.gz."""
    url = os.environ.get("MACPOOL_TEST_POSTGRES_URL", "").replace("+psycopg", "")
    psql, pg_dump = _pg_bin("psql"), _pg_bin("pg_dump")
    if not url or psql is None or pg_dump is None:
        return None
    import psycopg

    from plugins.ovirt.pgcopy import CopyReader

    reader = CopyReader(io.BytesIO(plain_dump), tables=(), where=str)
    list(reader.rows())
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_engine")
        admin.execute("CREATE DATABASE bench_engine")
    target = urlsplit(url)._replace(path="/bench_engine").geturl()
    with psycopg.connect(target) as conn:
        for block in reader.blocks:
            columns = ", ".join(f"{c} text" for c in block.columns)
            conn.execute(f"CREATE TABLE {block.table} ({columns})")
    dump_file = folder / "plain.sql"
    dump_file.write_bytes(plain_dump)
    subprocess.run([psql, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump_file), target], check=True)
    custom = folder / "engine_backup.db"
    subprocess.run([pg_dump, "--format=custom", f"--file={custom}", target], check=True)
    archive = folder / "engine-custom.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(custom, arcname="./db/engine_backup.db")
        info = tarfile.TarInfo("./version")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"4.5.6\n"))
    return archive


def run() -> list[Result]:
    """Generate the backups, then one dry run of each in a child process."""
    from plugins.ovirt.generate_backup import dump_lines, write_engine_backup

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="macpool-bench-backup-") as tmp:
        folder = Path(tmp)
        plain = write_engine_backup(
            folder / "engine.tar.xz", vms=VMS, nics_per_vm=NICS_PER_VM, filler_rows=FILLER_ROWS
        )
        dump = "".join(
            dump_lines(vms=VMS, nics_per_vm=NICS_PER_VM, filler_rows=FILLER_ROWS)
        ).encode()
        custom = _custom_backup(dump, folder)
        runs = [("plain (--small-size, tar.xz)", plain, len(dump), FILLER_ROWS)]
        if custom is not None:
            runs.append(("custom (pg_dump -Fc, tar.gz)", custom, 0, FILLER_ROWS))
        del dump
        large = write_engine_backup(
            folder / "large.tar.xz",
            vms=VMS,
            nics_per_vm=NICS_PER_VM,
            filler_rows=LARGE_FILLER_ROWS,
        )
        large_dump = sum(
            len(line.encode())
            for line in dump_lines(vms=VMS, nics_per_vm=NICS_PER_VM, filler_rows=LARGE_FILLER_ROWS)
        )
        runs.append(("plain, 10x filler", large, large_dump, LARGE_FILLER_ROWS))
        for label, backup, expanded, filler in runs:
            shape = f"{VMS:,} VMs x {NICS_PER_VM} NICs, {filler:,} audit_log rows skipped"
            figures = _measure(backup)
            size = f"{backup.stat().st_size / 2**20:.1f} MiB archive"
            if expanded:
                size += f", dump {expanded / 2**20:.1f} MiB"
            notes = f"{shape}; {size}; SQLite"
            results += [
                result(f"backup {label}: read", figures["read_s"], "s", notes),
                result(
                    f"backup {label}: dry run (read + import, nothing written)",
                    figures["total_s"],
                    "s",
                    f"{notes}; goal <= {GOAL_S:.0f} s",
                ),
                result(
                    f"backup {label}: peak memory (child ru_maxrss)",
                    figures["peak_kb"] / 1024,
                    "MB",
                    f"{notes}; goal <= {GOAL_MB:.0f} MB",
                ),
            ]
    if custom is None:
        results.append(
            result("backup custom (pg_dump -Fc)", 0, "-", "skipped: no MACPOOL_TEST_POSTGRES_URL")
        )
    return results


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _child(sys.argv[2])
