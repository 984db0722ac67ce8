"""oVirt import figures: reading, dry run and apply of a generated export storage domain.

The export domain holds MACPOOL_BENCH_OVIRT_VMS VMs (default 10,000) with 2 NICs each, written
by ``plugins.ovirt.generate.write_export_domain``; the database is a fresh SQLite file whose
default pool covers the generated MACs, so every NIC is "kept". Measured:

- read: ``read_paths`` over the domain (parse and normalize every OVF);
- dry run: read + the whole import inside a savepoint, rolled back (what the CLI does);
- apply: read + the import, committed;
- re-import: a dry run of the same export after applying (every NIC "unchanged").
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Result, result
from manager.core.actor import Actor, Owner
from manager.db import Base, Database
from manager.services import allocate_mac, bootstrap, create_pool, create_scope
from plugins.ovirt.generate import write_export_domain
from plugins.ovirt.importer import ImportOptions, run_import
from plugins.ovirt.reader import read_paths
from plugins.ovirt.report import ImportReport

VMS = int(os.environ.get("MACPOOL_BENCH_OVIRT_VMS", 10_000))
NICS_PER_VM = 2
DEFAULT_RANGE = "02:1a:4a:00:00:00-02:1a:4a:ff:ff:ff"
#: The pool of the allocations made while the import applies (not the export's MACs).
OTHER_RANGE = "0a:00:00:00:00:00-0a:00:00:ff:ff:ff"
ACTOR = Actor("bench")


#: The longest write lock an apply of the default shape may hold (seconds; DESIGN: ~2 s per
#: 10^4 VMs), and the longest a concurrent allocation may wait meanwhile.
LOCK_GOAL = 2.0 * VMS / 10_000


def _import(
    db: Database, domain: Path, *, dry_run: bool, locked: list[float] | None = None
) -> tuple[float, ImportReport]:
    began = time.perf_counter()
    export = read_paths([domain])
    lock_began = time.perf_counter()
    with db.session(write=True) as session:
        report = run_import(
            session, ACTOR, export, options=ImportOptions(dry_run=dry_run, scope="/")
        )
    if locked is not None:
        locked.append(time.perf_counter() - lock_began)
    return time.perf_counter() - began, report


def _allocate_meanwhile(db: Database, stop: threading.Event, waits: list[float]) -> None:
    """One allocation every 50 ms in its own write transaction, as the API would make them."""
    n = 0
    while not stop.is_set():
        began = time.perf_counter()
        with db.session(write=True) as session:
            allocate_mac(
                session,
                ACTOR,
                scope="/other",
                owner=Owner("vm", f"meanwhile-{n}"),
                interface="nic0",
            )
        waits.append(time.perf_counter() - began)
        n += 1
        stop.wait(0.05)


def run() -> list[Result]:
    """Generate the domain, then time read, dry run, apply and re-import."""
    with tempfile.TemporaryDirectory(prefix="macpool-bench-ovirt-") as tmp:
        root = Path(tmp)
        domain = write_export_domain(root / "export", vms=VMS, nics_per_vm=NICS_PER_VM)
        db = Database(f"sqlite:///{root / 'macpool.db'}")
        Base.metadata.create_all(db.engine)
        with db.session(write=True) as session:
            bootstrap(session, default_range=DEFAULT_RANGE)
            other = create_pool(session, ACTOR, name="other", ranges=[OTHER_RANGE])
            create_scope(session, ACTOR, kind="datacenter", name="other", pool_id=other.id)
        shape = f"{VMS:,} VMs x {NICS_PER_VM} NICs, export domain, SQLite"

        began = time.perf_counter()
        read_paths([domain])
        read_s = time.perf_counter() - began
        dry_s, dry = _import(db, domain, dry_run=True)
        waits: list[float] = []
        locked: list[float] = []
        stop = threading.Event()
        other = threading.Thread(target=_allocate_meanwhile, args=(db, stop, waits))
        other.start()
        try:
            apply_s, applied = _import(db, domain, dry_run=False, locked=locked)
        finally:
            stop.set()
            other.join()
        again_s, again = _import(db, domain, dry_run=True)
        db.dispose()
    nics = VMS * NICS_PER_VM
    assert dry.totals()["kept"] == nics and applied.totals()["kept"] == nics
    assert again.totals()["unchanged"] == nics
    return [
        result("read export domain", read_s, "s", shape),
        result("dry run (read + import + rollback)", dry_s, "s", f"{shape}; goal <= 30 s"),
        result("apply (read + import + commit)", apply_s, "s", shape),
        result(
            "apply: write lock held (import + commit)",
            locked[0],
            "s",
            f"{shape}; goal <= {LOCK_GOAL:g} s",
        ),
        result(
            "allocation during the apply: longest wait",
            max(waits),
            "s",
            f"{shape}; one allocation per 50 ms, n={len(waits)}; goal <= 2 s",
        ),
        result("re-import dry run (all unchanged)", again_s, "s", shape),
        result("apply per NIC", apply_s / nics * 1e3, "ms", shape),
    ]
