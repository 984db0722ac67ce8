"""A VM answered from the webhook's reserve: the reconciler waits briefly for the recording."""
# ruff: noqa: F811 - the fixtures imported from reconciler_harness are parameters here

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from manager.core.mac import format_mac_int
from manager.db import Allocation, AuditEvent, Database
from manager.services.reservations import (
    Answer,
    Reserved,
    Target,
    record_answers,
    reserve_macs,
    resolve_target,
)
from plugins.kubernetes import reconciler as reconciler_module
from plugins.kubernetes.reconciler import Reconciler
from tests.plugins.kubernetes.reconciler_harness import (  # noqa: F401 - fixtures
    WEBHOOK,
    admit,
    api_client,
    db,
    holdings,
    make_reconciler,
    pump_until,
    settings,
    standin,
)
from tests.plugins.kubernetes.standin import NAMESPACES, VMS, StandInServer, namespace
from tests.plugins.kubernetes.standin import virtual_machine as vm

STAMP = "2026-08-04T11:30:00.000000001Z"
KEY = ("apps", "vm", "web", "default")


def _reserved(db: Database) -> tuple[Target, Reserved]:
    target = resolve_target(db, "/kubernetes/apps")
    assert target is not None
    with db.session(write=True) as session:
        [reserved] = reserve_macs(
            session,
            WEBHOOK,
            target=target,
            holder="host:1:abc",
            first=0,
            count=1,
            ttl_seconds=300,
            keep_free=0,
        )
    return target, reserved


def _watching(standin: StandInServer, db: Database, make: Callable[..., Reconciler]) -> Reconciler:
    standin.state.put(NAMESPACES, namespace("apps"))
    seed = admit(db, namespace="apps", kind="vm", name="seed", interface="default")
    standin.state.put(VMS, vm("apps", "seed", {"default": seed}))
    reconciler = make()
    reconciler.sync()
    reconciler.start_watches()
    return reconciler


def _owner_row(db: Database, mac: int) -> tuple[int, str, str, str]:
    with db.session() as session:
        [row] = session.execute(
            select(
                Allocation.id, Allocation.owner_kind, Allocation.owner_name, Allocation.state
            ).where(Allocation.mac == mac)
        ).all()
    return tuple(row)  # type: ignore[return-value]


def _web_carries_a_reserved_mac(
    standin: StandInServer, db: Database, make: Callable[..., Reconciler]
) -> tuple[Reconciler, Target, Reserved]:
    """VM apps/web appears carrying a MAC the webhook answered from its reserve."""
    reconciler = _watching(standin, db, make)
    target, reserved = _reserved(db)
    standin.state.put(
        VMS, vm("apps", "web", {"default": format_mac_int(reserved.mac)}, stamp=STAMP)
    )
    pump_until(reconciler, lambda: ("apps", "web") in reconciler.objects["vm"])
    return reconciler, target, reserved


def test_an_answer_recorded_meanwhile_is_confirmed_in_place(
    standin: StandInServer, db: Database, make_reconciler: Callable[..., Reconciler]
) -> None:
    reconciler, target, reserved = _web_carries_a_reserved_mac(standin, db, make_reconciler)
    mac = format_mac_int(reserved.mac)
    # Carried MAC held by a reservation, owner holding nothing: not taken over yet.
    assert ("vm", ("apps", "web")) in reconciler.waiting
    assert _owner_row(db, reserved.mac)[1] == "reservation"

    answer = Answer(
        reservation_id=reserved.id,
        mac=reserved.mac,
        scope_id=target.scope_id,
        owner_kind="vm",
        owner_name="web",
        owner_uid=None,
        interface="default",
        transaction=STAMP,
        expires_at=datetime.now(UTC) + timedelta(seconds=300),
        pool_name=target.pool_name,
        scope_path=target.scope_path,
    )
    with db.session(write=True) as session:  # what the webhook's recorder does
        assert record_answers(session, WEBHOOK, [answer]) == []
    pump_until(reconciler, lambda: holdings(db).get(KEY) == (mac, "allocated"))
    assert not reconciler.waiting
    # The reservation's own row, recorded then confirmed: nothing taken over.
    assert _owner_row(db, reserved.mac) == (reserved.id, "vm", "web", "allocated")
    with db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.target == mac).order_by(AuditEvent.id)
        ).all()
    assert actions[-1] == "allocation.confirm"


def test_an_answer_never_recorded_is_taken_over_from_the_object(
    standin: StandInServer,
    db: Database,
    make_reconciler: Callable[..., Reconciler],
) -> None:
    reconciler, _, reserved = _web_carries_a_reserved_mac(standin, db, make_reconciler)
    mac = format_mac_int(reserved.mac)
    seen = reconciler.waiting[("vm", ("apps", "web"))]
    # The webhook process died before recording: after the wait, the object's MAC is adopted.
    pump_until(reconciler, lambda: holdings(db).get(KEY) == (mac, "allocated"), timeout=5)
    assert time.monotonic() - seen >= reconciler_module.UNRECORDED_WAIT
    assert not reconciler.waiting
    assert _owner_row(db, reserved.mac) == (reserved.id, "vm", "web", "allocated")
