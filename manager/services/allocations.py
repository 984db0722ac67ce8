"""Allocations: binding MACs to owner NICs, system-wide unique unless duplicates are allowed.

Concurrency: automatic allocation locks the effective pool's row; a requested MAC also locks
the pool whose range contains it and the held MAC's row; release locks the same. On SQLite the
write transaction holds the database lock. Behind all of it, the primary key of ``held_macs``
guarantees that two transactions can never both take a free MAC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import (
    InvalidInput,
    InvalidState,
    NotFound,
)
from manager.core.mac import MacAddress, format_mac_int, parse_mac
from manager.core.ranges import unicast_count
from manager.db import Allocation, HeldMac, Pool, Scope
from manager.services.allocation_rows import (
    DEFAULT_LOW_THRESHOLD,
    MAX_TTL_SECONDS,
    STATES,
    AllocationRequest,
    AllocationResult,
    Handover,
    availability_warning,
    describe_holder,
    holder_sentence,
    holders_of,
    low_threshold,
)
from manager.services.audit import record_event
from manager.services.bulk_allocations import allocate_macs, allocate_one
from manager.services.common import Page, check_id, check_paging, lock_pools
from manager.services.handovers import FINAL, PENDING, give_back
from manager.services.index_cache import record_change
from manager.services.pool_counters import NONE, apply_changes, mac_shares
from manager.services.pools import containing_pool
from manager.services.scopes import ScopeRef, get_scope


@dataclass(frozen=True, slots=True)
class MacInfo:
    mac: MacAddress
    holders: list[Allocation]
    #: The pool whose range contains the MAC, if any.
    pool: Pool | None


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def find_by_identity(
    session: Session, *, scope: Scope, owner_kind: str, owner_name: str, interface: str
) -> Allocation | None:
    """The allocation holding this owner identity in the scope, if any."""
    return session.scalars(
        select(Allocation).where(
            Allocation.scope_id == scope.id,
            Allocation.owner_kind == owner_kind,
            Allocation.owner_name == owner_name,
            Allocation.interface == interface,
        )
    ).first()


def allocate_mac(
    session: Session,
    actor: Actor,
    *,
    scope: ScopeRef,
    owner: Owner,
    interface: str,
    mac: object | None = None,
    state: str = "allocated",
    ttl_seconds: int | None = None,
    transaction: str | None = None,
    now: datetime | None = None,
    effective_pool_id: int | None = None,
    handover: Handover | None = None,
    adopt_reserved: bool = False,
) -> AllocationResult:
    """Give the owner's interface a MAC from its scope's effective pool, or the requested one.

    Idempotent per owner identity (scope, owner kind, owner name, interface): a repeat returns
    the existing allocation with ``created=False``. ``ttl_seconds`` makes it ``pending`` until
    confirmed; ``transaction`` is stored with it (an opaque stamp the caller confirms by).
    A requested MAC held elsewhere is accepted only when the requester's pool and
    the pools of every holder allow duplicates; otherwise :class:`MacInUse` names the holders.
    The rules are those of :func:`allocate_macs`: this is a batch of one. With ``handover``
    the owner is the migrated copy of that VM: a requested MAC it holds moves to the owner
    (see :mod:`manager.services.handovers`). ``adopt_reserved``: the requested MAC is on the
    owner's object already, so a reservation made ahead for it is taken over.

    ``effective_pool_id`` saves a query when the caller resolved the scope (a :class:`Scope`)
    and its effective pool in this same transaction (:func:`scope_and_pool_id`).
    """
    request = AllocationRequest(
        scope, owner, interface, mac, state, ttl_seconds, transaction, handover, adopt_reserved
    )
    target = None
    if effective_pool_id is not None and isinstance(scope, Scope):
        target = (scope, effective_pool_id)
    return allocate_one(session, actor, request, now=now, target=target)


def _check_availability(session: Session, actor: Actor, pool: Pool) -> None:
    """Record a warning when a pool's availability falls to the threshold or to zero."""
    size = sum(unicast_count(r.start_mac, r.end_mac) for r in pool.ranges)
    flag, warning = availability_warning(pool, size=size, threshold=low_threshold(session))
    if flag != pool.low_warned:
        pool.low_warned = flag
    if warning is not None:
        record_event(session, actor, **warning)


def get_allocation(session: Session, allocation_id: int) -> Allocation:
    """The allocation with this id, or :class:`NotFound`."""
    allocation = session.get(Allocation, check_id(allocation_id, "an allocation"))
    if allocation is None:
        raise NotFound(
            f"Allocation {allocation_id} does not exist.", details={"allocation_id": allocation_id}
        )
    return allocation


def release_allocation(
    session: Session, actor: Actor, allocation_id: int, *, reason: str = "released"
) -> dict[str, Any]:
    """Release one holder; the MAC stays held while duplicates of it remain."""
    allocation = get_allocation(session, allocation_id)
    value = allocation.mac
    home = containing_pool(session, value)
    locked = lock_pools(session, [home.id]) if home else {}
    session.scalars(select(HeldMac).where(HeldMac.mac == value).with_for_update()).first()
    if allocation.handover == PENDING:
        # The VM it was migrated from may still run: the MAC goes back to it, not to the pool.
        released = describe_holder(allocation)
        give_back(session, actor, allocation, reason=reason)
        return {
            **released,
            "mac": format_mac_int(value),
            "returned_to": describe_holder(allocation),
        }
    home_id = None if home is None else home.id
    before = mac_shares(session.connection(), value, home_id)
    released = describe_holder(allocation)
    session.delete(allocation)
    session.flush()
    remaining = session.scalar(select(func.count()).where(Allocation.mac == value)) or 0
    after = mac_shares(session.connection(), value, home_id) if remaining else NONE
    apply_changes(session, [(before, after)])
    if remaining == 0:
        held = session.get(HeldMac, value)
        if held is not None:
            session.delete(held)
            session.flush()
        if home is not None:
            record_change(session, locked[home.id], mac=value, held=False)
            _check_availability(session, actor, locked[home.id])
    record_event(
        session,
        actor,
        action=f"allocation.{reason}",
        target_type="mac",
        target_id=format_mac_int(value),
        target=format_mac_int(value),
        details={**released, "still_held_by": remaining},
    )
    return {**released, "mac": format_mac_int(value)}


def release_owner(
    session: Session,
    actor: Actor,
    *,
    scope: ScopeRef,
    owner_kind: str,
    owner_name: str,
    interface: str | None = None,
    reason: str = "released",
) -> list[dict[str, Any]]:
    """Release every MAC (or one interface's) held by an owner in a scope."""
    target = get_scope(session, scope)
    query = select(Allocation.id).where(
        Allocation.scope_id == target.id,
        Allocation.owner_kind == owner_kind,
        Allocation.owner_name == owner_name,
    )
    if interface is not None:
        query = query.where(Allocation.interface == interface)
    return [
        release_allocation(session, actor, alloc_id, reason=reason)
        for alloc_id in session.scalars(query.order_by(Allocation.id)).all()
    ]


def confirm_allocation(session: Session, actor: Actor, allocation_id: int) -> Allocation:
    """Turn a pending allocation into a lasting one (idempotent for allocated ones)."""
    allocation = get_allocation(session, allocation_id)
    if allocation.state == "allocated":
        return allocation
    if allocation.state != "pending":
        raise InvalidState(
            f"Allocation {allocation_id} is {allocation.state}; only pending allocations can be "
            "confirmed."
        )
    allocation.state = "allocated"
    allocation.expires_at = None
    record_event(
        session,
        actor,
        action="allocation.confirm",
        target_type="mac",
        target_id=format_mac_int(allocation.mac),
        target=format_mac_int(allocation.mac),
        details={"allocation_id": allocation.id},
    )
    return allocation


def expire_pending(
    session: Session, actor: Actor, *, now: datetime | None = None, limit: int | None = None
) -> int:
    """Release every pending allocation whose time ran out (at most ``limit``); how many.

    With ``limit`` the caller repeats it, each call in its own transaction, while it answers
    ``limit``: a staged batch whose writer died leaves up to 10^5 rows to expire at once.
    """
    query = (
        select(Allocation.id)
        .where(Allocation.state == "pending", Allocation.expires_at <= _now(now))
        .order_by(Allocation.id)
    )
    ids = session.scalars(query if limit is None else query.limit(limit)).all()
    for alloc_id in ids:
        release_allocation(session, actor, alloc_id, reason="expired")
    return len(ids)


def find_allocations(
    session: Session,
    *,
    mac: object | None = None,
    pool_id: int | None = None,
    scope_id: int | None = None,
    owner_kind: str | None = None,
    owner_name: str | None = None,
    interface: str | None = None,
    state: str | None = None,
    handover: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[Allocation]:
    """Allocations matching every given filter, ordered by MAC then id."""
    check_paging(limit, offset)
    query = select(Allocation)
    if mac is not None:
        query = query.where(Allocation.mac == parse_mac(mac).value)
    if pool_id is not None:
        query = query.where(Allocation.pool_id == pool_id)
    if scope_id is not None:
        query = query.where(Allocation.scope_id == scope_id)
    if owner_kind:
        query = query.where(Allocation.owner_kind == owner_kind)
    if owner_name:
        query = query.where(Allocation.owner_name == owner_name)
    if interface:
        query = query.where(Allocation.interface == interface)
    if state is not None:
        if state not in STATES:
            raise InvalidInput(f"State '{state}' is not one of {', '.join(STATES)}.", field="state")
        query = query.where(Allocation.state == state)
    if handover is not None:
        if handover not in (PENDING, FINAL):
            raise InvalidInput(
                f"Hand-over state '{handover}' is not one of {PENDING}, {FINAL}.", field="handover"
            )
        query = query.where(Allocation.handover == handover)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(Allocation.mac, Allocation.id).limit(limit).offset(offset)
    ).all()
    return Page(items=items, total=total, limit=limit, offset=offset)


def mac_info(session: Session, mac: object) -> MacInfo:
    """Who holds a MAC and which pool's range contains it."""
    value = parse_mac(mac)
    return MacInfo(
        mac=value,
        holders=holders_of(session, value.value),
        pool=containing_pool(session, value.value),
    )


def list_duplicates(session: Session, *, limit: int = 50, offset: int = 0) -> Page[MacInfo]:
    """MACs held by more than one owner, in address order."""
    check_paging(limit, offset)
    shared = select(Allocation.mac).group_by(Allocation.mac).having(func.count() > 1)
    total = session.scalar(select(func.count()).select_from(shared.subquery())) or 0
    macs = session.scalars(shared.order_by(Allocation.mac).limit(limit).offset(offset)).all()
    return Page(
        items=[mac_info(session, format_mac_int(m)) for m in macs],
        total=total,
        limit=limit,
        offset=offset,
    )


__all__ = [
    "DEFAULT_LOW_THRESHOLD",
    "MAX_TTL_SECONDS",
    "STATES",
    "AllocationRequest",
    "AllocationResult",
    "MacInfo",
    "allocate_mac",
    "allocate_macs",
    "confirm_allocation",
    "describe_holder",
    "expire_pending",
    "find_allocations",
    "find_by_identity",
    "get_allocation",
    "holder_sentence",
    "list_duplicates",
    "mac_info",
    "release_allocation",
    "release_owner",
]
