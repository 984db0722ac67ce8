"""Property-based: over random sequences of import, hand-over, delete, complete and expiry, no
MAC is held by two owners in a no-duplicates pool, and no MAC is free while the oVirt VM it was
imported for may still use it (its hand-over is not final)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import delete, select, update

from manager.core.actor import Owner
from manager.core.errors import InterfaceInUse, MacInUse
from manager.core.mac import format_mac_int
from manager.db import (
    Allocation,
    AuditEvent,
    Base,
    Database,
    HeldMac,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
)
from manager.services import (
    Handover,
    allocate_mac,
    bootstrap,
    complete_handovers,
    create_pool,
    create_scope,
    expire_pending,
    get_scope,
    release_allocation,
    release_owner,
)
from manager.services.index_cache import forget
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.services.recount import recount, stored

BASE = 0x0A0000000000
MACS = st.integers(min_value=1, max_value=6).map(lambda i: BASE + i)
SOURCES = st.sampled_from(["src-a", "src-b", "src-c"])
COPIES = st.sampled_from(["copy-1", "copy-2", "copy-3"])

_database: list[Database] = []


@pytest.fixture(scope="module", autouse=True)
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path: Path = tmp_path_factory.mktemp("handover-props") / "macpool.db"
    db = Database(f"sqlite:///{path}")
    Base.metadata.create_all(db.engine)
    _database[:] = [db]
    yield
    with db.session() as s:
        forget(s)
    db.dispose()
    _database.clear()


class Migrations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.db = _database[0]
        with self.db.session(write=True) as s:
            for model in (Allocation, HeldMac, AuditEvent, PoolChange):
                s.execute(delete(model))
            s.execute(update(Scope).values(pool_id=None))
            s.execute(delete(Scope).where(Scope.kind == "namespace"))
            s.execute(delete(Scope).where(Scope.parent_id.is_not(None)))
            s.execute(delete(Scope))
            s.execute(delete(PoolRange))
            s.execute(delete(Pool))
        with self.db.session(write=True) as s:
            forget(s)
            bootstrap(s, default_range=DEFAULT_RANGE)
            ovirt = create_pool(
                s,
                ACTOR,
                name="ovirt",
                ranges=[f"{format_mac_int(BASE)}-{format_mac_int(BASE + 7)}"],
            )
            create_scope(s, ACTOR, kind="datacenter", name="dc", pool_id=ovirt.id)
            cluster = create_scope(s, ACTOR, kind="cluster", name="ocp")
            create_scope(s, ACTOR, kind="namespace", name="ns", parent=cluster.id)
        #: Source VM id → its MAC, while the source may still use it (imported, not final).
        self.live: dict[str, int] = {}

    @rule(source=SOURCES, mac=MACS)
    def import_source(self, source: str, mac: int) -> None:
        try:
            with self.db.session(write=True) as s:
                result = allocate_mac(
                    s,
                    ACTOR,
                    scope="/dc",
                    owner=Owner("ovirt-vm", source, source),
                    interface="nic1",
                    mac=format_mac_int(mac),
                )
                held = result.allocation.mac
        except (MacInUse, InterfaceInUse):
            return
        self.live.setdefault(source, held)

    @rule(copy=COPIES, source=SOURCES, mac=MACS, pending=st.booleans())
    def hand_over(self, copy: str, source: str, mac: int, pending: bool) -> None:
        try:
            with self.db.session(write=True) as s:
                allocate_mac(
                    s,
                    ACTOR,
                    scope="/ocp/ns",
                    owner=Owner("vm", copy),
                    interface="default",
                    mac=format_mac_int(mac),
                    handover=Handover(source, plan=f"plan-{source}"),
                    ttl_seconds=60 if pending else None,
                )
        except (MacInUse, InterfaceInUse):
            pass

    @rule(copy=COPIES)
    def delete_copy(self, copy: str) -> None:
        with self.db.session(write=True) as s:
            release_owner(
                s,
                ACTOR,
                scope=get_scope(s, "/ocp/ns"),
                owner_kind="vm",
                owner_name=copy,
                reason="deleted",
            )

    @rule(source=SOURCES)
    def complete_plan(self, source: str) -> None:
        with self.db.session(write=True) as s:
            done = complete_handovers(s, ACTOR, plan=f"plan-{source}")
        if done:
            self.live.pop(source, None)  # the source VM is gone: its MAC is the copy's now

    @rule(source=SOURCES)
    def decommission_source(self, source: str) -> None:
        with self.db.session(write=True) as s:
            ids = s.scalars(
                select(Allocation.id).where(
                    Allocation.owner_kind == "ovirt-vm", Allocation.owner_uid == source
                )
            ).all()
            for allocation_id in ids:
                release_allocation(s, ACTOR, allocation_id)
        if ids:
            self.live.pop(source, None)

    @rule()
    def expire(self) -> None:
        with self.db.session(write=True) as s:
            expire_pending(s, ACTOR, now=datetime.now(UTC) + timedelta(hours=1))

    @invariant()
    def one_holder_per_mac_and_the_tables_agree(self) -> None:
        with self.db.session() as s:
            macs = s.scalars(select(Allocation.mac)).all()
            assert len(macs) == len(set(macs)), "a MAC held twice in a no-duplicates pool"
            assert set(macs) == set(s.scalars(select(HeldMac.mac)))
            assert stored(s) == recount(s)

    @invariant()
    def no_mac_is_free_while_its_source_may_use_it(self) -> None:
        with self.db.session() as s:
            for source, mac in self.live.items():
                holders = s.scalars(select(Allocation).where(Allocation.mac == mac)).all()
                assert holders, f"{format_mac_int(mac)} free while {source} may use it"
                [holder] = holders
                if holder.owner_kind == "ovirt-vm":
                    assert holder.owner_uid == source
                else:
                    assert holder.handover == "pending"
                    assert (holder.source or {}).get("owner_uid") == source


TestMigrations = Migrations.TestCase
TestMigrations.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
