"""Owners as a whole: aligning what an owner holds with what it is observed to carry.

A channel that watches an external inventory (a reconciler) sees owners and their NICs as they
really are, and must bring the allocations in line: confirm pending ones the inventory now
shows, release ones it no longer shows, register MACs it carries that nobody allocated, move
allocations from a provisional owner name to the final one. Every change goes through
:mod:`manager.services.allocations`, so the uniqueness and duplicate rules stay in one place:
a MAC the rules refuse is reported back, never forced in.

"Settled" is the caller's judgement of a pending allocation's ``transaction`` stamp: whether the
observation already reflects the change that asked for it. Unsettled pending allocations belong
to a change still in flight and are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import Conflict, InterfaceInUse, InvalidInput
from manager.core.mac import MacAddress, format_mac_int
from manager.db import Allocation, Database, Scope
from manager.db.prepared import Prepared
from manager.services.allocation_rows import (
    RESERVATION_KIND,
    Handover,
    audit_row,
    connection,
    insert_audit,
)
from manager.services.allocations import (
    allocate_mac,
    confirm_allocation,
    describe_holder,
    release_allocation,
)
from manager.services.audit import record_event
from manager.services.handovers import pending_sources
from manager.services.scopes import ScopeRef, get_scope

Settled = Callable[[str | None], bool]


@dataclass(frozen=True, slots=True)
class Holding:
    """One allocation of a scope subtree, as plain values (cheap to hold 10^5 of them)."""

    id: int
    scope_id: int
    scope_name: str
    owner_kind: str
    owner_name: str
    owner_uid: str | None
    interface: str
    mac: int
    state: str
    transaction: str | None


@dataclass(slots=True)
class Alignment:
    """What :func:`align_owner` did; ``refused`` maps interface → the refusal's details."""

    confirmed: int = 0
    released: int = 0
    registered: int = 0
    in_flight: int = 0
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the database was modified."""
        return bool(self.confirmed or self.released or self.registered)


def _subtree(scope: Scope) -> Any:
    """The SQL condition 'the allocation's scope is ``scope`` or one of its descendants'."""
    prefix = scope.path.rstrip("/") + "/"
    return or_(Scope.id == scope.id, Scope.path.startswith(prefix, autoescape=True))


def _holdings(session: Session, scope: Scope, *conditions: Any) -> list[Holding]:
    query = (
        select(
            Allocation.id,
            Allocation.scope_id,
            Scope.name.label("scope_name"),
            Allocation.owner_kind,
            Allocation.owner_name,
            Allocation.owner_uid,
            Allocation.interface,
            Allocation.mac,
            Allocation.state,
            Allocation.transaction,
        )
        .join(Scope, Scope.id == Allocation.scope_id)
        .where(_subtree(scope), *conditions)
        .order_by(Allocation.id)
    )
    return [Holding(**row._asdict()) for row in session.execute(query)]


def subtree_holdings(
    session: Session, *, scope: ScopeRef, owner_kinds: Iterable[str] | None = None
) -> list[Holding]:
    """Every allocation held in ``scope`` and below (optionally of some owner kinds)."""
    target = get_scope(session, scope)
    if owner_kinds is None:
        return _holdings(session, target)
    return _holdings(session, target, Allocation.owner_kind.in_(list(owner_kinds)))


#: Owners (or MACs) per ``IN`` list of :func:`owners_holdings` and :func:`reservation_held`.
_OWNER_CHUNK = 400
#: Up to this many owners (or MACs), one prepared autocommit read each beats one ``IN`` query
#: (built per call) in a transaction: a reconciler at a few VMs per second reads one or two.
_FEW = 8

_alloc_t: Table = Allocation.__table__  # type: ignore[assignment]
_scope_t: Table = Scope.__table__  # type: ignore[assignment]
_HOLDING_COLUMNS = (
    _alloc_t.c.id,
    _alloc_t.c.scope_id,
    _scope_t.c.name,
    _alloc_t.c.owner_kind,
    _alloc_t.c.owner_name,
    _alloc_t.c.owner_uid,
    _alloc_t.c.interface,
    _alloc_t.c.mac,
    _alloc_t.c.state,
    _alloc_t.c.transaction,
)
_OWNER_HOLDINGS = Prepared(
    select(*_HOLDING_COLUMNS)
    .join(_scope_t, _scope_t.c.id == _alloc_t.c.scope_id)
    .where(
        _alloc_t.c.scope_id == bindparam("scope_id"),
        _alloc_t.c.owner_kind == bindparam("owner_kind"),
        _alloc_t.c.owner_name == bindparam("owner_name"),
    )
    .order_by(_alloc_t.c.id)
)
_RESERVATION_OF = Prepared(
    select(_alloc_t.c.mac).where(
        _alloc_t.c.mac == bindparam("mac"), _alloc_t.c.owner_kind == RESERVATION_KIND
    )
)


def _holding(row: Sequence[Any]) -> Holding:
    return Holding(
        id=row[0],
        scope_id=row[1],
        scope_name=row[2],
        owner_kind=row[3],
        owner_name=row[4],
        owner_uid=row[5],
        interface=row[6],
        mac=row[7],
        state=row[8],
        transaction=row[9],
    )


def owners_holdings(
    database: Database, owners: Iterable[tuple[int, str, str]]
) -> dict[tuple[int, str, str], list[Holding]]:
    """The allocations of many owners, as plain values, keyed by (scope id, owner kind, owner
    name); owners holding nothing are left out. Read outside the caller's transactions (one
    prepared autocommit read per owner when they are few, else a few ``IN`` queries), so a
    caller that finds nothing to change needs no write transaction: what it then writes must
    check that what it read still holds (as :func:`confirm_holdings` does)."""
    wanted = set(owners)
    found: dict[tuple[int, str, str], list[Holding]] = {}
    if len(wanted) <= _FEW:
        for scope_id, kind, name in wanted:
            rows = database.autocommit_rows(
                _OWNER_HOLDINGS, {"scope_id": scope_id, "owner_kind": kind, "owner_name": name}
            )
            if rows:
                found[(scope_id, kind, name)] = [_holding(row) for row in rows]
        return found
    ordered = sorted(wanted)
    with database.session() as session:
        conn = session.connection()
        for start in range(0, len(ordered), _OWNER_CHUNK):
            chunk = ordered[start : start + _OWNER_CHUNK]
            result = conn.execute(
                select(*_HOLDING_COLUMNS)
                .join(_scope_t, _scope_t.c.id == _alloc_t.c.scope_id)
                .where(
                    _alloc_t.c.scope_id.in_(sorted({o[0] for o in chunk})),
                    _alloc_t.c.owner_name.in_(sorted({o[2] for o in chunk})),
                )
                .order_by(_alloc_t.c.id)
            )
            for row in result:
                key = (row[1], row[3], row[4])
                if key in wanted:
                    found.setdefault(key, []).append(_holding(row))
    return found


def reservation_held(database: Database, macs: Iterable[int]) -> set[int]:
    """Which of these MACs are held by a reservation (a webhook's MAC reserved ahead, maybe
    answered to the API server and not recorded to its owner yet); read as
    :func:`owners_holdings` reads."""
    wanted = sorted(set(macs))
    if len(wanted) <= _FEW:
        return {mac for mac in wanted if database.autocommit_rows(_RESERVATION_OF, {"mac": mac})}
    found: set[int] = set()
    with database.session() as session:
        conn = session.connection()
        for start in range(0, len(wanted), _OWNER_CHUNK):
            chunk = wanted[start : start + _OWNER_CHUNK]
            found.update(
                conn.execute(
                    select(_alloc_t.c.mac).where(
                        _alloc_t.c.owner_kind == RESERVATION_KIND, _alloc_t.c.mac.in_(chunk)
                    )
                ).scalars()
            )
    return found


_alloc_table: Table = Allocation.__table__  # type: ignore[assignment]
_CONFIRM = Prepared(
    update(_alloc_table)
    .where(
        _alloc_table.c.id == bindparam("allocation_id"),
        _alloc_table.c.mac == bindparam("mac"),
        _alloc_table.c.state == "pending",
    )
    .values(state="allocated", expires_at=None, updated_at=bindparam("now"))
)
_LEARN_UID = Prepared(
    update(_alloc_table)
    .where(
        and_(
            _alloc_table.c.id == bindparam("allocation_id"),
            _alloc_table.c.owner_uid.is_(None),
        )
    )
    .values(owner_uid=bindparam("uid"), updated_at=bindparam("now"))
)


def confirm_holdings(
    session: Session,
    actor: Actor,
    pending: Sequence[Holding],
    *,
    uids: Mapping[int, str] | None = None,
    now: datetime | None = None,
) -> bool:
    """:func:`confirm_allocation` for many pending allocations at once, all or nothing.

    One batched UPDATE and one ``allocation.confirm`` event per allocation (as
    :func:`confirm_allocation` records it); ``uids`` (allocation id → owner uid) are learnt
    by allocations that record none yet (as :func:`align_owner` does). Each holding must still
    be pending with the same MAC: if any is not (changed since it was read), nothing is
    written and the answer is False, for the caller to take the one-by-one way.
    """
    moment = now or datetime.now(UTC)
    learn = [{"allocation_id": key, "uid": uid, "now": moment} for key, uid in (uids or {}).items()]
    if not pending and not learn:
        return True
    params = [{"allocation_id": h.id, "mac": h.mac, "now": moment} for h in pending]
    events = []
    for holding in pending:
        mac = format_mac_int(holding.mac)
        events.append(
            audit_row(
                actor,
                action="allocation.confirm",
                target_type="mac",
                target_id=mac,
                target=mac,
                details={"allocation_id": holding.id},
                now=moment,
            )
        )
    try:
        with session.begin_nested():
            conn = connection(session)  # inside: the SAVEPOINT is emitted before the UPDATE
            if _CONFIRM.count_many(conn, params) != len(params):
                raise _Changed
            _LEARN_UID.run_many(conn, learn)
            insert_audit(conn, events)
    except _Changed:
        return False
    return True


class _Changed(Exception):
    """A holding changed since it was read: the batch is not written."""


def owner_allocations(
    session: Session, *, scope: ScopeRef, owner_kind: str, owner_name: str
) -> list[Allocation]:
    """The allocations of one owner in one scope, by interface."""
    target = get_scope(session, scope)
    return list(
        session.scalars(
            select(Allocation)
            .where(
                Allocation.scope_id == target.id,
                Allocation.owner_kind == owner_kind,
                Allocation.owner_name == owner_name,
            )
            .order_by(Allocation.interface)
        )
    )


_alloc: Table = Allocation.__table__  # type: ignore[assignment]
#: What an owner holds in a scope, as Core rows (cheaper than ORM objects on a hot path).
_OWNER_INTERFACES = Prepared(
    select(_alloc.c.id, _alloc.c.interface, _alloc.c.mac).where(
        _alloc.c.scope_id == bindparam("scope_id"),
        _alloc.c.owner_kind == bindparam("owner_kind"),
        _alloc.c.owner_name == bindparam("owner_name"),
    )
)


def owner_interfaces(
    session: Session, *, scope_id: int, owner_kind: str, owner_name: str
) -> list[tuple[int, str, int]]:
    """(allocation id, interface, MAC) of every allocation one owner holds in one scope.

    :func:`owner_allocations` without building ORM objects, for callers that answer per request.
    """
    params = {"scope_id": scope_id, "owner_kind": owner_kind, "owner_name": owner_name}
    rows = _OWNER_INTERFACES.rows(session.connection(), params)
    return [(int(id_), str(interface), int(mac)) for id_, interface, mac in rows]


def owners_named_like(
    session: Session, *, scope: ScopeRef, owner_kind: str, prefix: str
) -> dict[str, list[Allocation]]:
    """Owner name → allocations, for the owners in one scope whose name starts with ``prefix``."""
    target = get_scope(session, scope)
    found: dict[str, list[Allocation]] = {}
    for allocation in session.scalars(
        select(Allocation)
        .where(
            Allocation.scope_id == target.id,
            Allocation.owner_kind == owner_kind,
            Allocation.owner_name.startswith(prefix, autoescape=True),
        )
        .order_by(Allocation.owner_name, Allocation.interface)
    ):
        found.setdefault(allocation.owner_name, []).append(allocation)
    return found


def rename_owner(
    session: Session,
    actor: Actor,
    *,
    scope: ScopeRef,
    owner_kind: str,
    old_name: str,
    new_name: str,
    uid: str | None = None,
) -> int:
    """Move every allocation of an owner to a new name (and uid); returns how many moved.

    Used when a provisional name (known before the owner existed) becomes the real one. Refused
    with :class:`InterfaceInUse` when the new name already holds one of the same interfaces:
    two allocations must never share an owner identity.
    """
    target = get_scope(session, scope)
    moving = owner_allocations(session, scope=target, owner_kind=owner_kind, owner_name=old_name)
    if not moving or old_name == new_name:
        return 0
    taken = {
        a.interface
        for a in owner_allocations(
            session, scope=target, owner_kind=owner_kind, owner_name=new_name
        )
    }
    # An identity whose MAC is in a pending hand-over stays taken (the MAC may come back).
    wanted = [(target.id, owner_kind, new_name, a.interface) for a in moving]
    taken |= {identity[3] for identity in pending_sources(session.connection(), wanted)}
    clash = sorted(taken & {a.interface for a in moving})
    if clash:
        raise InterfaceInUse(
            f"{owner_kind} '{new_name}' in scope {target.path} already holds interface(s) "
            f"{', '.join(clash)}; '{old_name}' cannot be renamed onto it.",
            details={"interfaces": clash},
        )
    for allocation in moving:
        allocation.owner_name = new_name
        if uid is not None:
            allocation.owner_uid = uid
    session.flush()
    record_event(
        session,
        actor,
        action="allocation.rename",
        target_type="owner",
        target_id=None,
        target=f"{owner_kind} {new_name}",
        details={
            "scope": target.path,
            "owner_kind": owner_kind,
            "from": old_name,
            "to": new_name,
            "allocations": [a.id for a in moving],
        },
    )
    return len(moving)


def align_owner(
    session: Session,
    actor: Actor,
    *,
    scope: ScopeRef,
    owner: Owner,
    observed: Mapping[str, int],
    settled: Settled,
    handover: Handover | None = None,
) -> Alignment:
    """Bring an owner's allocations in line with the interface → MAC map it was observed with.

    Per held allocation: a pending one the observation has not ``settled`` is left alone (its
    interface too); one whose interface shows the same MAC is kept (confirmed if pending); any
    other is released. Then every observed interface without an allocation gets its MAC
    registered as allocated (taking over a MAC reserved ahead for it: the object carries it);
    a refusal by the allocation rules (e.g. the MAC is held elsewhere
    and duplicates are not allowed) is collected in ``refused`` rather than raised.
    ``handover``: the owner is the migrated copy of that VM and may take its MACs. A kept
    allocation that does not record the owner's uid yet learns it (a later migration of this
    owner is matched by it).
    """
    target = get_scope(session, scope)
    result = Alignment()
    busy: set[str] = set()
    for allocation in owner_allocations(
        session, scope=target, owner_kind=owner.kind, owner_name=owner.name
    ):
        if allocation.state == "pending" and not settled(allocation.transaction):
            result.in_flight += 1
            busy.add(allocation.interface)
        elif observed.get(allocation.interface) == allocation.mac:
            busy.add(allocation.interface)
            if owner.uid and allocation.owner_uid is None:
                allocation.owner_uid = owner.uid
            if allocation.state == "pending":
                confirm_allocation(session, actor, allocation.id)
                result.confirmed += 1
        elif allocation.state != "reserved":
            release_allocation(session, actor, allocation.id, reason="reconciled")
            result.released += 1
        else:
            busy.add(allocation.interface)
    for interface, mac in sorted(observed.items()):
        if interface in busy:
            continue
        try:
            with session.begin_nested():
                allocate_mac(
                    session,
                    actor,
                    scope=target,
                    owner=owner,
                    interface=interface,
                    mac=MacAddress(mac),
                    handover=handover,
                    adopt_reserved=True,  # observed on the object: a reservation is its own
                )
        except (Conflict, InvalidInput) as exc:
            result.refused[interface] = {"mac": format_mac_int(mac), **exc.details}
            continue
        result.registered += 1
    return result


def expire_pending_in(
    session: Session, actor: Actor, *, scope: ScopeRef, now: datetime | None = None
) -> list[Holding]:
    """Release the pending allocations of ``scope`` and below whose time ran out."""
    target = get_scope(session, scope)
    expired = _holdings(
        session,
        target,
        Allocation.state == "pending",
        Allocation.expires_at <= (now or datetime.now(UTC)),
    )
    for holding in expired:
        release_allocation(session, actor, holding.id, reason="expired")
    return expired


def _shared_in(target: Scope) -> Any:
    """MACs held more than once, at least once in ``target`` or below (a subquery)."""
    shared = select(Allocation.mac).group_by(Allocation.mac).having(func.count() > 1)
    return (
        select(Allocation.mac)
        .join(Scope, Scope.id == Allocation.scope_id)
        .where(_subtree(target), Allocation.mac.in_(shared))
    )


def shared_mac_counts(session: Session, *, scope: ScopeRef) -> list[tuple[int, int]]:
    """(MAC, number of holders) of the MACs :func:`shared_macs` reports, by MAC.

    The same MACs and holders, counted in the database instead of described one by one.
    """
    rows = session.execute(
        select(Allocation.mac, func.count())
        .where(Allocation.mac.in_(_shared_in(get_scope(session, scope))))
        .group_by(Allocation.mac)
        .order_by(Allocation.mac)
    )
    return [(int(mac), int(count)) for mac, count in rows]


def shared_macs(session: Session, *, scope: ScopeRef) -> dict[int, list[dict[str, Any]]]:
    """MACs held more than once where at least one holder is in ``scope`` or below.

    Maps each MAC to all of its holders (as :func:`describe_holder` shows them), wherever they
    are: a duplicate shared with an owner outside the subtree is still a duplicate.
    """
    holders = session.scalars(
        select(Allocation)
        .where(Allocation.mac.in_(_shared_in(get_scope(session, scope))))
        .order_by(Allocation.mac, Allocation.id)
    )
    result: dict[int, list[dict[str, Any]]] = {}
    for allocation in holders:
        result.setdefault(allocation.mac, []).append(describe_holder(allocation))
    return result


__all__ = [
    "Alignment",
    "Holding",
    "Settled",
    "align_owner",
    "confirm_holdings",
    "expire_pending_in",
    "owner_allocations",
    "owner_interfaces",
    "owners_holdings",
    "owners_named_like",
    "rename_owner",
    "reservation_held",
    "shared_mac_counts",
    "shared_macs",
    "subtree_holdings",
]
