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

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

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
from manager.core.mac import MacAddress, format_mac_int, parse_mac
from manager.core.ranges import unicast_count
from manager.db import Allocation, HeldMac, Pool, Scope
from manager.services.allocation_rows import (
    DEFAULT_LOW_THRESHOLD,
    MAX_TTL_SECONDS,
    STATES,
    AllocationRequest,
    AllocationResult,
    CheckedRequest,
    advance_pool,
    allocation_row,
    audit_row,
    availability_warning,
    check_request,
    connection,
    containing_pool_ids,
    describe_holder,
    holder_sentence,
    holders_of,
    identity_id,
    insert_allocations,
    insert_audit,
    insert_changes,
    insert_held,
    insert_held_if_free,
    lock_held,
    low_threshold,
    persistent_allocation,
    write_pool,
)
from manager.services.audit import record_event
from manager.services.bulk_allocations import allocate_macs
from manager.services.common import Page, check_id, check_paging, lock_pools
from manager.services.index_cache import advance_index, pool_index, record_change
from manager.services.pool_counters import NONE, Shares, apply_changes, mac_shares, single_holder
from manager.services.pools import containing_pool
from manager.services.scopes import ScopeRef, get_scope, scope_and_pool_id


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
) -> AllocationResult:
    """Give the owner's interface a MAC from its scope's effective pool, or the requested one.

    Idempotent per owner identity (scope, owner kind, owner name, interface): a repeat returns
    the existing allocation with ``created=False``. ``ttl_seconds`` makes it ``pending`` until
    confirmed; ``transaction`` is stored with it (an opaque stamp the caller confirms by).
    A requested MAC held elsewhere is accepted only when the requester's pool and
    the pools of every holder allow duplicates; otherwise :class:`MacInUse` names the holders.

    ``effective_pool_id`` saves a query when the caller resolved the scope (a :class:`Scope`)
    and its effective pool in this same transaction (:func:`scope_and_pool_id`).
    """
    request = AllocationRequest(scope, owner, interface, mac, state, ttl_seconds, transaction)
    checked = check_request(request, now=_now(now))
    if effective_pool_id is not None and isinstance(scope, Scope):
        target, effective_id = scope, effective_pool_id
    else:
        target, effective_id = scope_and_pool_id(session, scope)
    conn = connection(session)
    # Lock the pools before looking for the owner identity: a concurrent identical request
    # (a retry) holds the same lock, so once it is ours its allocation is visible and this
    # one answers with it instead of failing on the identity's unique constraint.
    value = checked.requested
    home_id = None if value is None else containing_pool_ids(conn, [value]).get(value)
    locked = lock_pools(
        session, [effective_id] + ([home_id] if home_id is not None else []), load_ranges=False
    )
    existing_id = identity_id(conn, scope_id=target.id, checked=checked)
    if existing_id is not None:
        existing = session.get(Allocation, existing_id)
        assert existing is not None  # read in this very transaction
        if checked.requested is not None and checked.requested != existing.mac:
            raise InterfaceInUse(
                f"{checked.owner_kind} '{checked.owner_name}' interface '{checked.interface}' "
                f"in scope {target.path} already holds {format_mac_int(existing.mac)}; release "
                f"it before asking for {format_mac_int(checked.requested)}.",
                field="mac",
                details={"holder": describe_holder(existing)},
            )
        return AllocationResult(existing, created=False)

    moment = datetime.now(UTC)
    home: Pool | None
    effective = locked[effective_id]
    #: What the MAC counted for in the pools' statistics before; None: held by nobody.
    shares: Shares | None = None
    if value is None:
        value, size = _take_next(session, conn, effective)
        home, in_range = effective, True
    else:
        home, size, in_range, shares = _take_requested(
            session, conn, effective, locked.get(home_id) if home_id is not None else None, value
        )
    row = allocation_row(
        checked,
        mac=value,
        pool_id=effective.id,
        scope_id=target.id,
        in_range=in_range,
        actor=actor,
        now=moment,
    )
    [row["id"]] = insert_allocations(conn, [row])
    if checked.requested is not None:
        after = (
            single_holder(effective.id, home_id)
            if shares is None
            else mac_shares(conn, value, home_id)
        )
        apply_changes(session, [(shares or NONE, after)])
    allocation = persistent_allocation(session, row, scope=target, pool=effective)
    events = [
        audit_row(
            actor,
            action="allocation.create",
            target_type="mac",
            target_id=format_mac_int(value),
            target=format_mac_int(value),
            details=_created_details(row, target, effective, checked),
            now=moment,
        )
    ]
    if home is not None:
        flag, warning = availability_warning(home, size=size, threshold=low_threshold(session))
        set_committed_value(home, "low_warned", flag)
        if warning is not None:
            events.append(audit_row(actor, now=moment, **warning))
        cursor = value if checked.requested is None else home.cursor
        write_pool(conn, home, cursor=cursor, now=moment)
    insert_audit(conn, events)
    return AllocationResult(allocation, created=True)


def _created_details(
    row: dict[str, Any], target: Scope, effective: Pool, checked: CheckedRequest
) -> dict[str, Any]:
    """The details of an ``allocation.create`` audit event."""
    return {
        "allocation_id": row.get("id"),
        "scope": target.path,
        "owner_kind": checked.owner_kind,
        "owner_name": checked.owner_name,
        "interface": checked.interface,
        "pool": effective.name,
        "state": checked.state,
        "requested": checked.requested is not None,
        "in_range": row["in_range"],
    }


def _take_next(session: Session, conn: Connection, pool: Pool) -> tuple[int, int]:
    """The next free MAC of the locked pool, taken; returns (mac, size of the pool)."""
    ranges, index = pool_index(session, pool)
    value = next_free_mac(ranges, index, pool.cursor)
    if value is None:
        raise PoolExhausted(
            f"Pool '{pool.name}' has no free MAC address left: all {ranges.size} addresses of "
            "its ranges are held. Add a range to the pool or release MACs.",
            details={"pool": pool.name, "pool_id": pool.id, "size": ranges.size},
        )
    insert_held(conn, [value])
    _hold_in_pool(session, conn, pool, [value])
    return value, ranges.size


def _hold_in_pool(session: Session, conn: Connection, pool: Pool, macs: list[int]) -> None:
    """Record MACs newly held inside the pool's ranges: change rows, then this process's index."""
    base = (pool.revision, pool.index_token)
    insert_changes(conn, advance_pool(pool, macs))
    advance_index(session, pool, base=base, macs=macs)


def _take_requested(
    session: Session, conn: Connection, effective: Pool, home: Pool | None, value: int
) -> tuple[Pool | None, int, bool, Shares | None]:
    """Take a requested MAC; ``home`` is the locked pool whose range contains it, if any.

    Returns (the pool whose held MACs changed (None when the MAC was held already or lies in
    no pool's range), that pool's size, whether the MAC is in the effective pool's ranges,
    what the MAC counted for in the pools' statistics when it was held already (else None)).
    """
    in_range = home is not None and home.id == effective.id
    # Held already (and still held once its row is locked against a concurrent release)?
    if not insert_held_if_free(conn, value) and (
        lock_held(conn, value) or not insert_held_if_free(conn, value)
    ):
        _check_duplicate(session, effective, value)
        return None, 0, in_range, mac_shares(conn, value, None if home is None else home.id)
    if home is None:
        return None, 0, in_range, None
    ranges, _ = pool_index(session, home)
    _hold_in_pool(session, conn, home, [value])
    return home, ranges.size, in_range, None


def _check_duplicate(session: Session, effective: Pool, value: int) -> None:
    """Accept a second holder of a held MAC only when every pool involved allows duplicates."""
    holders = holders_of(session, value)
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
