"""Allocations: binding MACs to owner NICs, system-wide unique unless duplicates are allowed.

Concurrency: automatic allocation locks the effective pool's row; a requested MAC also locks
the pool whose range contains it and the held MAC's row; release locks the same. On SQLite the
write transaction holds the database lock. Behind all of it, the primary key of ``held_macs``
guarantees that two transactions can never both take a free MAC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import (
    InterfaceInUse,
    InvalidInput,
    InvalidState,
    MacInUse,
    NotFound,
    PoolExhausted,
)
from manager.core.index import next_free_mac
from manager.core.mac import MacAddress, format_mac_int, parse_assignable_mac, parse_mac
from manager.core.ranges import unicast_count
from manager.db import Allocation, HeldMac, Pool, Scope
from manager.services.audit import record_event
from manager.services.common import Page, check_id, check_paging, lock_pools
from manager.services.index_cache import pool_index, record_change
from manager.services.pools import containing_pool
from manager.services.scopes import ScopeRef, get_scope, scope_and_pool_id

STATES = ("allocated", "pending", "reserved")
MAX_TTL_SECONDS = 30 * 24 * 3600
DEFAULT_LOW_THRESHOLD = 10


@dataclass(frozen=True, slots=True)
class AllocationResult:
    allocation: Allocation
    #: False when the owner identity already held a MAC (an idempotent repeat).
    created: bool


@dataclass(frozen=True, slots=True)
class MacInfo:
    mac: MacAddress
    holders: list[Allocation]
    #: The pool whose range contains the MAC, if any.
    pool: Pool | None


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _text(value: object, field: str, *, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{field.replace('_', ' ').capitalize()} must be a non-empty string.", field=field
        )
    if len(value) > limit or not value.isprintable():
        raise InvalidInput(
            f"{field.replace('_', ' ').capitalize()} {value[:60]!r} is too long (max {limit}) "
            "or contains control characters.",
            field=field,
        )
    return value


def describe_holder(allocation: Allocation) -> dict[str, Any]:
    """A holder as the error details and the API show it."""
    return {
        "allocation_id": allocation.id,
        "owner_kind": allocation.owner_kind,
        "owner_name": allocation.owner_name,
        "owner_uid": allocation.owner_uid,
        "interface": allocation.interface,
        "scope": allocation.scope.path,
        "pool": allocation.pool.name,
        "pool_id": allocation.pool_id,
        "state": allocation.state,
    }


def holder_sentence(allocation: Allocation) -> str:
    return (
        f"{allocation.owner_kind} '{allocation.owner_name}' interface '{allocation.interface}' "
        f"in scope {allocation.scope.path} (pool '{allocation.pool.name}')"
    )


def find_by_identity(
    session: Session, *, scope: Scope, owner_kind: str, owner_name: str, interface: str
) -> Allocation | None:
    return session.scalars(
        select(Allocation).where(
            Allocation.scope_id == scope.id,
            Allocation.owner_kind == owner_kind,
            Allocation.owner_name == owner_name,
            Allocation.interface == interface,
        )
    ).first()


def _holders(session: Session, mac: int) -> list[Allocation]:
    return list(
        session.scalars(select(Allocation).where(Allocation.mac == mac).order_by(Allocation.id))
    )


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
) -> AllocationResult:
    """Give the owner's interface a MAC from its scope's effective pool, or the requested one.

    Idempotent per owner identity (scope, owner kind, owner name, interface): a repeat returns
    the existing allocation with ``created=False``. ``ttl_seconds`` makes it ``pending`` until
    confirmed; ``transaction`` is stored with it (an opaque stamp the caller confirms by).
    A requested MAC held elsewhere is accepted only when the requester's pool and
    the pools of every holder allow duplicates; otherwise :class:`MacInUse` names the holders.
    """
    owner_kind = _text(owner.kind, "owner_kind", limit=64)
    owner_name = _text(owner.name, "owner_name", limit=512)
    interface = _text(interface, "interface", limit=255)
    if owner.uid is not None:
        _text(owner.uid, "owner_uid", limit=255)
    if state not in STATES:
        raise InvalidInput(f"State '{state}' is not one of {', '.join(STATES)}.", field="state")
    expires_at = None
    if ttl_seconds is not None:
        if (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int)
            or not (1 <= ttl_seconds <= MAX_TTL_SECONDS)
        ):
            raise InvalidInput(
                f"ttl_seconds {ttl_seconds!r} is out of bounds: use 1 to {MAX_TTL_SECONDS}.",
                field="ttl_seconds",
            )
        if state == "reserved":
            raise InvalidInput(
                "A reserved MAC cannot expire; drop ttl_seconds.", field="ttl_seconds"
            )
        state = "pending"
        expires_at = _now(now) + timedelta(seconds=ttl_seconds)
    elif state == "pending":
        raise InvalidInput("A pending allocation needs ttl_seconds.", field="ttl_seconds")
    requested = parse_assignable_mac(mac) if mac is not None else None

    target, effective_id = scope_and_pool_id(session, scope)
    existing = find_by_identity(
        session, scope=target, owner_kind=owner_kind, owner_name=owner_name, interface=interface
    )
    if existing is not None:
        if requested is not None and requested.value != existing.mac:
            raise InterfaceInUse(
                f"{owner_kind} '{owner_name}' interface '{interface}' in scope {target.path} "
                f"already holds {format_mac_int(existing.mac)}; release it before asking for "
                f"{requested}.",
                field="mac",
                details={"holder": describe_holder(existing)},
            )
        return AllocationResult(existing, created=False)

    pool_for_change: Pool | None
    if requested is None:
        value, effective, size = _take_next(session, effective_id)
        pool_for_change, in_range = effective, True
    else:
        value, effective, pool_for_change, in_range = _take_requested(
            session, effective_id, requested.value
        )
        size = None
    allocation = Allocation(
        mac=value,
        pool_id=effective.id,
        scope_id=target.id,
        owner_kind=owner_kind,
        owner_name=owner_name,
        owner_uid=owner.uid,
        interface=interface,
        state=state,
        expires_at=expires_at,
        in_range=in_range,
        transaction=transaction[:64] if transaction else None,
        created_by=str(actor)[:255],
    )
    session.add(allocation)
    session.flush()
    record_event(
        session,
        actor,
        action="allocation.create",
        target_type="mac",
        target_id=format_mac_int(value),
        target=format_mac_int(value),
        details={
            "allocation_id": allocation.id,
            "scope": target.path,
            "owner_kind": owner_kind,
            "owner_name": owner_name,
            "interface": interface,
            "pool": effective.name,
            "state": state,
            "requested": requested is not None,
            "in_range": in_range,
        },
    )
    if pool_for_change is not None:
        _check_availability(session, actor, pool_for_change, size=size)
    return AllocationResult(allocation, created=True)


def _take_next(session: Session, pool_id: int) -> tuple[int, Pool, int]:
    """The next free MAC of the pool (locked), taken; returns (mac, pool, size of the pool)."""
    pool = lock_pools(session, [pool_id], load_ranges=False)[pool_id]
    ranges, index = pool_index(session, pool)
    value = next_free_mac(ranges, index, pool.cursor)
    if value is None:
        raise PoolExhausted(
            f"Pool '{pool.name}' has no free MAC address left: all {ranges.size} addresses of "
            "its ranges are held. Add a range to the pool or release MACs.",
            details={"pool": pool.name, "pool_id": pool.id, "size": ranges.size},
        )
    # A Core insert: no unit-of-work bookkeeping for a row nothing else in this call touches.
    session.execute(insert(HeldMac).values(mac=value))
    pool.cursor = value
    record_change(session, pool, mac=value, held=True)
    return value, pool, ranges.size


def _take_requested(
    session: Session, effective_id: int, value: int
) -> tuple[int, Pool, Pool | None, bool]:
    """Take a requested MAC; returns (mac, effective pool, pool whose range holds it, in_range)."""
    home = containing_pool(session, value)
    locked = lock_pools(session, [effective_id] + ([home.id] if home else []))
    effective = locked[effective_id]
    home = locked[home.id] if home is not None else None
    held = session.scalars(select(HeldMac).where(HeldMac.mac == value).with_for_update()).first()
    in_range = home is not None and home.id == effective.id
    if held is not None:
        holders = _holders(session, value)
        pools = {effective.id: effective, **{h.pool_id: h.pool for h in holders}}
        refusing = [p for p in pools.values() if not p.allow_duplicates]
        if refusing or not holders:
            names = ", ".join(f"'{p.name}'" for p in refusing)
            raise MacInUse(
                f"MAC {format_mac_int(value)} is already in use by "
                + "; ".join(holder_sentence(h) for h in holders)
                + (f". Duplicates are not allowed by pool {names}." if refusing else "."),
                field="mac",
                details={
                    "mac": format_mac_int(value),
                    "pool": effective.name,
                    "holders": [describe_holder(h) for h in holders],
                    "refusing_pools": [p.name for p in refusing],
                },
            )
        return value, effective, None, in_range
    try:
        with session.begin_nested():
            session.add(HeldMac(mac=value))
            session.flush()
    except IntegrityError as exc:  # taken by a concurrent transaction this very moment
        raise MacInUse(
            f"MAC {format_mac_int(value)} was just taken by another request; try again.",
            field="mac",
            details={"mac": format_mac_int(value), "pool": effective.name, "holders": []},
        ) from exc
    if home is not None:
        record_change(session, home, mac=value, held=True)
    return value, effective, home, in_range


def _check_availability(
    session: Session, actor: Actor, pool: Pool, *, size: int | None = None
) -> None:
    """Record a warning when a pool's availability falls to the threshold or to zero.

    ``size`` (the pool's unicast size) saves loading its ranges when the caller knows it.
    """
    threshold = int(session.info.get("low_threshold", DEFAULT_LOW_THRESHOLD))
    if size is None:
        size = sum(unicast_count(r.start_mac, r.end_mac) for r in pool.ranges)
    available = size - pool.held_count
    if available == 0:
        record_event(
            session,
            actor,
            action="pool.exhausted",
            target_type="pool",
            target_id=pool.id,
            target=pool.name,
            severity="warning",
            details={"size": size, "message": f"Pool '{pool.name}' is exhausted."},
        )
        pool.low_warned = True
    elif available <= threshold and not pool.low_warned:
        record_event(
            session,
            actor,
            action="pool.low",
            target_type="pool",
            target_id=pool.id,
            target=pool.name,
            severity="warning",
            details={
                "size": size,
                "available": available,
                "message": f"Pool '{pool.name}' has only {available} free MAC(s) left.",
            },
        )
        pool.low_warned = True
    elif available > threshold and pool.low_warned:
        pool.low_warned = False


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
    released = describe_holder(allocation)
    session.delete(allocation)
    session.flush()
    remaining = session.scalar(select(func.count()).where(Allocation.mac == value)) or 0
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


def expire_pending(session: Session, actor: Actor, *, now: datetime | None = None) -> int:
    """Release every pending allocation whose time ran out; returns how many."""
    ids = session.scalars(
        select(Allocation.id)
        .where(Allocation.state == "pending", Allocation.expires_at <= _now(now))
        .order_by(Allocation.id)
    ).all()
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
        holders=_holders(session, value.value),
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
    "STATES",
    "AllocationResult",
    "MacInfo",
    "allocate_mac",
    "confirm_allocation",
    "describe_holder",
    "expire_pending",
    "find_allocations",
    "find_by_identity",
    "get_allocation",
    "list_duplicates",
    "mac_info",
    "release_allocation",
    "release_owner",
]
