"""allocate_macs: the same outcome as allocate_mac per request, requested MACs first."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse, InvalidInput, MacInUse, MacPoolError, PoolExhausted
from manager.core.mac import format_mac_int
from manager.db import Allocation, AuditEvent, HeldMac, Pool, PoolChange
from manager.services import allocate_mac, create_pool, create_scope
from manager.services.allocations import AllocationRequest, AllocationResult, allocate_macs
from tests.services.conftest import row_counts

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
A = 0x0A0000000000  # pool A (no duplicates) on /a: 6 MACs
B = 0x0E0000000000  # pool B (duplicates allowed) on /b: 6 MACs
C = 0x0C0000000000  # pool C (duplicates allowed), assigned to no scope
OUTSIDE = 0x120000000000
MACS = [A, A + 1, A + 5, B, B + 2, C, C + 1, OUTSIDE]


def _setup(session: Session, actor: Actor) -> None:
    a = create_pool(
        session, actor, name="A", ranges=[f"{format_mac_int(A)}-{format_mac_int(A + 5)}"]
    )
    b = create_pool(
        session,
        actor,
        name="B",
        ranges=[f"{format_mac_int(B)}-{format_mac_int(B + 5)}"],
        allow_duplicates=True,
    )
    create_pool(
        session,
        actor,
        name="C",
        ranges=[f"{format_mac_int(C)}-{format_mac_int(C + 5)}"],
        allow_duplicates=True,
    )
    create_scope(session, actor, kind="datacenter", name="a", pool_id=a.id)
    create_scope(session, actor, kind="datacenter", name="b", pool_id=b.id)
    session.low_threshold = 2


def _snapshot(session: Session) -> dict[str, Any]:
    """Everything an allocation writes, ids left out (they are not part of the rules)."""
    session.flush()
    allocations = session.execute(
        select(
            Allocation.scope_id,
            Allocation.owner_kind,
            Allocation.owner_name,
            Allocation.interface,
            Allocation.mac,
            Allocation.pool_id,
            Allocation.state,
            Allocation.in_range,
            Allocation.transaction,
        )
    ).all()
    events = session.execute(
        select(AuditEvent.action, AuditEvent.target, AuditEvent.severity, AuditEvent.details)
        .where(AuditEvent.action.in_(["allocation.create", "pool.low", "pool.exhausted"]))
        .order_by(AuditEvent.id)
    ).all()
    return {
        "allocations": sorted(tuple(r) for r in allocations),
        "held": sorted(session.scalars(select(HeldMac.mac))),
        "pools": sorted(
            tuple(r)
            for r in session.execute(
                select(Pool.name, Pool.cursor, Pool.held_count, Pool.revision, Pool.low_warned)
            )
        ),
        "changes": sorted(
            tuple(r)
            for r in session.execute(
                select(PoolChange.pool_id, PoolChange.revision, PoolChange.mac, PoolChange.held)
            )
        ),
        "events": [
            (a, t, s, {k: v for k, v in d.items() if k != "allocation_id"}) for a, t, s, d in events
        ],
    }


def _sequential(
    session: Session, actor: Actor, requests: list[AllocationRequest]
) -> tuple[list[AllocationResult] | tuple[int, type[MacPoolError]], dict[str, Any]]:
    """allocate_mac per request, requested MACs first; the results or (index, error class)."""
    order = [i for i, r in enumerate(requests) if r.mac is not None]
    order += [i for i, r in enumerate(requests) if r.mac is None]
    results: dict[int, AllocationResult] = {}
    for i in order:
        r = requests[i]
        try:
            results[i] = allocate_mac(
                session,
                actor,
                scope=r.scope,
                owner=r.owner,
                interface=r.interface,
                mac=r.mac,
                state=r.state,
                ttl_seconds=r.ttl_seconds,
                transaction=r.transaction,
                now=NOW,
            )
        except MacPoolError as exc:
            return (i, type(exc)), _snapshot(session)
    return [results[i] for i in range(len(requests))], _snapshot(session)


def _outcome(results: list[AllocationResult]) -> list[tuple[bool, int, str, str]]:
    return [
        (r.created, r.allocation.mac, r.allocation.scope.path, r.allocation.pool.name)
        for r in results
    ]


request_strategy = st.builds(
    AllocationRequest,
    scope=st.sampled_from(["/a", "/b"]),
    owner=st.builds(Owner, kind=st.just("vm"), name=st.sampled_from(["v0", "v1", "v2"])),
    interface=st.sampled_from(["nic0", "nic1"]),
    mac=st.one_of(st.none(), st.none(), st.sampled_from([format_mac_int(m) for m in MACS])),
    ttl_seconds=st.sampled_from([None, 60]),
    transaction=st.sampled_from([None, "t1"]),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.lists(request_strategy, max_size=3),
    batch=st.lists(request_strategy, min_size=1, max_size=8),
)
def test_batch_equals_allocate_mac_per_request(
    session: Session, actor: Actor, seed: list[AllocationRequest], batch: list[AllocationRequest]
) -> None:
    outer = session.begin_nested()
    try:
        _setup(session, actor)
        for r in seed:  # allocations already in the database before the batch
            with contextlib.suppress(MacPoolError):
                allocate_macs(session, actor, [r], now=NOW)
        before = _snapshot(session)
        reference = session.begin_nested()
        expected, expected_state = _sequential(session, actor, batch)
        reference.rollback()
        attempt = session.begin_nested()
        try:
            if isinstance(expected, tuple):
                index, error = expected
                with pytest.raises(error) as raised:
                    allocate_macs(session, actor, batch, now=NOW)
                assert raised.value.details["request"]["index"] == index
                assert f"equest {index} (" in raised.value.message
                assert _snapshot(session) == before
            else:
                results = allocate_macs(session, actor, batch, now=NOW)
                assert _outcome(results) == _outcome(expected)
                assert _snapshot(session) == expected_state
        finally:
            attempt.rollback()
    finally:
        outer.rollback()
        # Examples share the session: forget objects loaded by this one (their rows are gone).
        session.expunge_all()


@pytest.fixture
def pools(session: Session, actor: Actor) -> None:
    _setup(session, actor)


def test_requested_macs_go_first(session: Session, actor: Actor, pools: None) -> None:
    batch = [
        AllocationRequest("/a", Owner("vm", "auto"), "nic0"),
        AllocationRequest("/a", Owner("vm", "asks"), "nic0", mac=format_mac_int(A)),
    ]
    auto, asked = allocate_macs(session, actor, batch)
    assert asked.allocation.mac == A
    assert auto.allocation.mac == A + 1
    assert auto.created and asked.created
    assert auto.allocation.id > asked.allocation.id  # processed in that order


def test_refusal_writes_nothing_and_names_request(
    session: Session, actor: Actor, pools: None
) -> None:
    allocate_mac(session, actor, scope="/a", owner=Owner("vm", "holder"), interface="nic0")
    before = row_counts(session)
    batch = [
        AllocationRequest("/a", Owner("vm", "x"), "nic0"),
        AllocationRequest("/b", Owner("vm", "y"), "eth1", mac=format_mac_int(A)),
    ]
    with pytest.raises(MacInUse, match=r"Request 1 \(vm 'y' interface 'eth1', MAC 0a:00") as err:
        allocate_macs(session, actor, batch)
    assert err.value.details["request"] == {
        "index": 1,
        "owner_kind": "vm",
        "owner_name": "y",
        "interface": "eth1",
        "mac": format_mac_int(A),
    }
    assert row_counts(session) == before
    # The pool's cached index was not left with the refused batch's MAC in it.
    nxt = allocate_mac(session, actor, scope="/a", owner=Owner("vm", "x"), interface="nic0")
    assert nxt.allocation.mac == A + 1


def test_exhaustion_and_invalid_input_refuse_the_batch(
    session: Session, actor: Actor, pools: None
) -> None:
    before = row_counts(session)
    seven = [AllocationRequest("/a", Owner("vm", f"v{i}"), "nic0") for i in range(7)]
    with pytest.raises(PoolExhausted, match="Request 6"):
        allocate_macs(session, actor, seven)
    with pytest.raises(InvalidInput, match="Request 1") as err:
        allocate_macs(
            session,
            actor,
            [seven[0], AllocationRequest("/a", Owner("vm", "v"), "nic0", state="pending")],
        )
    assert err.value.field == "ttl_seconds"
    assert row_counts(session) == before


def test_repeat_in_batch_is_idempotent_or_refused(
    session: Session, actor: Actor, pools: None
) -> None:
    same = AllocationRequest("/a", Owner("vm", "v"), "nic0")
    first, again = allocate_macs(session, actor, [same, same])
    assert first.created and not again.created
    assert again.allocation is first.allocation
    other = AllocationRequest("/a", Owner("vm", "w"), "nic0", mac=format_mac_int(A + 5))
    clash = AllocationRequest("/a", Owner("vm", "w"), "nic0", mac=format_mac_int(A + 4))
    with pytest.raises(InterfaceInUse, match="Request 1"):
        allocate_macs(session, actor, [other, clash])
    assert allocate_macs(session, actor, []) == []
