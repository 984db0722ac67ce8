"""The allocation write path at the SQL level: request checks and Core statements.

``allocate_mac`` and ``allocate_macs`` share these. They talk to the session's connection with
SQLAlchemy Core statements instead of ORM units of work: an allocation is a handful of inserts
that nothing else in the transaction reads back through the ORM, and the flush machinery cost
more than the SQL itself. The statements of a single allocation are
:class:`~manager.db.prepared.Prepared` (compiled once, run on the DBAPI cursor); multi-row
inserts with ``RETURNING`` go through ``Connection.execute`` (insertmanyvalues). The returned
:class:`~manager.db.Allocation` objects are made persistent in the session from the values just
written (no reload), with their scope and pool already attached.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import manager_of_class, set_committed_value

from manager.core.actor import Actor, Owner
from manager.core.errors import InvalidInput
from manager.core.mac import parse_assignable_mac
from manager.db import (
    Allocation,
    AuditEvent,
    HeldMac,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
    UnitOfWork,
)
from manager.db.prepared import Prepared
from manager.db.session import DEFAULT_LOW_THRESHOLD
from manager.services.common import detached
from manager.services.scopes import ScopeRef

STATES = ("allocated", "pending", "reserved")
MAX_TTL_SECONDS = 30 * 24 * 3600

_alloc: Table = Allocation.__table__  # type: ignore[assignment]
_audit: Table = AuditEvent.__table__  # type: ignore[assignment]
_held: Table = HeldMac.__table__  # type: ignore[assignment]
_change: Table = PoolChange.__table__  # type: ignore[assignment]
_pool: Table = Pool.__table__  # type: ignore[assignment]
_range: Table = PoolRange.__table__  # type: ignore[assignment]

_IDENTITY = Prepared(
    select(_alloc.c.id).where(
        _alloc.c.scope_id == bindparam("scope_id"),
        _alloc.c.owner_kind == bindparam("owner_kind"),
        _alloc.c.owner_name == bindparam("owner_name"),
        _alloc.c.interface == bindparam("interface"),
    )
)
_INSERT_HELD = Prepared(insert(_held), keys=["mac"])
_INSERT_CHANGE = Prepared(insert(_change), keys=["pool_id", "revision", "mac", "held", "token"])
_AUDIT_KEYS = ("at", "actor", "action", "target_type", "target_id", "target", "severity", "details")
_INSERT_AUDIT = Prepared(insert(_audit), keys=_AUDIT_KEYS)
#: Every column of an allocation but ``id``, as :func:`allocation_row` gives them.
_ALLOCATION_KEYS = tuple(c.key for c in _alloc.columns if c.key != "id")
#: Many rows at once: one ``executemany`` (prepared), then the ids read back by owner identity
#: (unique) among the rows above the largest id before it. An ``INSERT ... RETURNING`` of
#: thousands of rows cost SQLAlchemy about 40 µs a row in parameter processing.
_INSERT_ALLOCATIONS = Prepared(insert(_alloc), keys=_ALLOCATION_KEYS)
_LAST_ALLOCATION_ID = Prepared(select(func.max(_alloc.c.id)))
_ALLOCATIONS_AFTER = Prepared(
    select(
        _alloc.c.id, _alloc.c.scope_id, _alloc.c.owner_kind, _alloc.c.owner_name, _alloc.c.interface
    ).where(_alloc.c.id > bindparam("after"))
)
_INSERT_ALLOCATION = Prepared(insert(_alloc).returning(_alloc.c.id), keys=_ALLOCATION_KEYS)
_UPDATE_POOL = Prepared(
    update(_pool)
    .where(_pool.c.id == bindparam("pool_id"))
    .values(
        cursor=bindparam("cursor"),
        held_count=bindparam("held_count"),
        revision=bindparam("revision"),
        index_token=bindparam("index_token"),
        low_warned=bindparam("low_warned"),
        updated_at=bindparam("updated_at"),
    )
)
_CONTAINING = Prepared(
    select(_range.c.pool_id)
    .where(_range.c.start_mac <= bindparam("mac"), _range.c.end_mac >= bindparam("mac"))
    .limit(1)
)
_HELD_FOR_UPDATE = Prepared(
    select(_held.c.mac).where(_held.c.mac == bindparam("mac")).with_for_update()
)
_HELD_IF_FREE: dict[str, Prepared] = {
    "postgresql": Prepared(
        postgresql.insert(_held).on_conflict_do_nothing().returning(_held.c.mac), keys=["mac"]
    ),
    "sqlite": Prepared(
        sqlite.insert(_held).on_conflict_do_nothing().returning(_held.c.mac), keys=["mac"]
    ),
}
#: Columns of an allocation row, in the order ``persistent_allocation`` expects them.
_COLUMNS = tuple(c.key for c in _alloc.columns)


#: Owner kind of MACs a webhook process reserved ahead (see docs/RESERVED_MACS.md).
RESERVATION_KIND = "reservation"

#: Owner kinds whose allocations a migrated VM may take over: an oVirt VM, a KubeVirt VM.
HANDOVER_SOURCE_KINDS = ("ovirt-vm", "vm")


@dataclass(frozen=True, slots=True)
class Handover:
    """The requester is the migrated copy of another VM and may take that VM's MACs.

    ``source_uid`` is the source VM's id (an oVirt VM id, or a KubeVirt VM's UID), as the
    migration tool labels the copy; ``plan`` and ``migration`` are its plan and run ids.
    """

    source_uid: str
    plan: str | None = None
    migration: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """One NIC's allocation, as :func:`~manager.services.allocations.allocate_mac` takes it."""

    scope: ScopeRef
    owner: Owner
    interface: str
    #: The requested MAC: text in any accepted form, or a :class:`MacAddress` (no parsing).
    mac: object | None = None
    state: str = "allocated"
    ttl_seconds: int | None = None
    transaction: str | None = None
    handover: Handover | None = None
    #: The requested MAC is on the owner's object already (a channel read it back from where
    #: it is used): a MAC reserved ahead for it (owner kind ``reservation``) is taken over.
    adopt_reserved: bool = False


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request whose fields passed the checks, normalized for the write."""

    owner_kind: str
    owner_name: str
    owner_uid: str | None
    interface: str
    state: str
    expires_at: datetime | None
    requested: int | None
    transaction: str | None
    handover: Handover | None = None
    adopt_reserved: bool = False


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


def check_request(request: AllocationRequest, *, now: datetime) -> CheckedRequest:
    """The request's fields checked and normalized; :class:`InvalidInput` names the bad one."""
    owner = request.owner
    owner_kind = _text(owner.kind, "owner_kind", limit=64)
    owner_name = _text(owner.name, "owner_name", limit=512)
    interface = _text(request.interface, "interface", limit=255)
    if owner.uid is not None:
        _text(owner.uid, "owner_uid", limit=255)
    state, ttl_seconds = request.state, request.ttl_seconds
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
        expires_at = now + timedelta(seconds=ttl_seconds)
    elif state == "pending":
        raise InvalidInput("A pending allocation needs ttl_seconds.", field="ttl_seconds")
    requested = parse_assignable_mac(request.mac).value if request.mac is not None else None
    transaction = request.transaction[:64] if request.transaction else None
    handover = request.handover
    if handover is not None:
        _text(handover.source_uid, "source_uid", limit=255)
        for value, field in ((handover.plan, "plan"), (handover.migration, "migration")):
            if value is not None:
                _text(value, field, limit=255)
    return CheckedRequest(
        owner_kind,
        owner_name,
        owner.uid,
        interface,
        state,
        expires_at,
        requested,
        transaction,
        handover,
        request.adopt_reserved and requested is not None,
    )


def connection(session: Session) -> Connection:
    """The session's connection, after flushing pending ORM changes the Core statements need."""
    session.flush()
    return session.connection()


def identity_id(conn: Connection, *, scope_id: int, checked: CheckedRequest) -> int | None:
    """The id of the allocation holding this owner identity in the scope, if any."""
    found: int | None = _IDENTITY.scalar(
        conn,
        {
            "scope_id": scope_id,
            "owner_kind": checked.owner_kind,
            "owner_name": checked.owner_name,
            "interface": checked.interface,
        },
    )
    return found


def containing_pool_ids(conn: Connection, macs: Sequence[int]) -> dict[int, int]:
    """For each MAC inside some pool's range, that pool's id (ranges never overlap)."""
    found: dict[int, int] = {}
    for mac in macs:
        pool_id = _CONTAINING.scalar(conn, {"mac": mac})
        if pool_id is not None:
            found[mac] = pool_id
    return found


def lock_held(conn: Connection, mac: int) -> bool:
    """Lock a held MAC's row (a concurrent release waits); whether it is still held."""
    return _HELD_FOR_UPDATE.first(conn, {"mac": mac}) is not None


@dataclass(frozen=True, slots=True)
class AllocationResult:
    allocation: Allocation
    #: False when the owner identity already held a MAC (an idempotent repeat).
    created: bool


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


def holders_of(session: Session, mac: int) -> list[Allocation]:
    """Every allocation of ``mac``, oldest first."""
    return list(
        session.scalars(select(Allocation).where(Allocation.mac == mac).order_by(Allocation.id))
    )


def low_threshold(session: Session) -> int:
    """The warning threshold of the session's database (the default for a bare session)."""
    return session.low_threshold if isinstance(session, UnitOfWork) else DEFAULT_LOW_THRESHOLD


def availability_warning(
    pool: Pool,
    *,
    size: int,
    threshold: int,
    held_count: int | None = None,
    low_warned: bool | None = None,
) -> tuple[bool, dict[str, Any] | None]:
    """The pool's new ``low_warned`` flag and the warning event to record, if any.

    A warning is recorded when availability falls to the threshold (once, until it recovers)
    or to zero (each time). ``held_count``/``low_warned`` override the pool's own values (a
    batch tracks them before writing them).
    """
    held = pool.held_count if held_count is None else held_count
    warned = pool.low_warned if low_warned is None else low_warned
    available = size - held
    if available == 0:
        return True, {
            "action": "pool.exhausted",
            "target_type": "pool",
            "target_id": pool.id,
            "target": pool.name,
            "severity": "warning",
            "details": {"size": size, "message": f"Pool '{pool.name}' is exhausted."},
        }
    if available <= threshold and not warned:
        return True, {
            "action": "pool.low",
            "target_type": "pool",
            "target_id": pool.id,
            "target": pool.name,
            "severity": "warning",
            "details": {
                "size": size,
                "available": available,
                "message": f"Pool '{pool.name}' has only {available} free MAC(s) left.",
            },
        }
    if available > threshold and warned:
        return False, None
    return warned, None


def insert_held(conn: Connection, macs: Sequence[int]) -> None:
    """Mark MACs held (the caller knows they are free: it holds the pool lock)."""
    if macs:
        _INSERT_HELD.run_many(conn, [{"mac": m} for m in macs])


def insert_held_if_free(conn: Connection, mac: int) -> bool:
    """Mark a requested MAC held unless someone holds it already; whether it was inserted.

    ``ON CONFLICT DO NOTHING`` instead of a savepoint: on PostgreSQL a concurrent transaction
    that inserted the MAC makes this insert wait for it, then do nothing (no aborted
    transaction to roll back to a savepoint).
    """
    statement = _HELD_IF_FREE[conn.dialect.name]
    # RETURNING, not rowcount: drivers differ in what rowcount reports for DO NOTHING.
    return statement.first(conn, {"mac": mac}) is not None


def advance_pool(pool: Pool, macs: Sequence[int], *, held: bool = True) -> list[dict[str, Any]]:
    """Move the pool's revision over MACs newly held (or, ``held=False``, no longer held);
    the ``pool_changes`` rows to insert.

    Only the ORM object's committed state changes here; :func:`write_pool` stores it.
    """
    rows = []
    revision = pool.revision
    token = pool.index_token
    for mac in macs:
        revision += 1
        token = secrets.randbits(62)
        rows.append(
            {"pool_id": pool.id, "revision": revision, "mac": mac, "held": held, "token": token}
        )
    set_committed_value(pool, "revision", revision)
    set_committed_value(pool, "index_token", token)
    set_committed_value(pool, "held_count", pool.held_count + (len(macs) if held else -len(macs)))
    return rows


def insert_changes(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        _INSERT_CHANGE.run_many(conn, rows)


def write_pool(conn: Connection, pool: Pool, *, cursor: int | None, now: datetime) -> None:
    """Store the pool's cursor, counters and warning flag (one UPDATE, no ORM flush)."""
    set_committed_value(pool, "cursor", cursor)
    set_committed_value(pool, "updated_at", now)
    _UPDATE_POOL.run(
        conn,
        {
            "pool_id": pool.id,
            "cursor": cursor,
            "held_count": pool.held_count,
            "revision": pool.revision,
            "index_token": pool.index_token,
            "low_warned": pool.low_warned,
            "updated_at": now,
        },
    )


def owner_columns(checked: CheckedRequest) -> dict[str, Any]:
    """The columns a request sets on the allocation it gets: owner, interface, state, stamp."""
    return {
        "owner_kind": checked.owner_kind,
        "owner_name": checked.owner_name,
        "owner_uid": checked.owner_uid,
        "interface": checked.interface,
        "state": checked.state,
        "expires_at": checked.expires_at,
        "transaction": checked.transaction,
    }


def allocation_row(
    checked: CheckedRequest,
    *,
    mac: int,
    pool_id: int,
    scope_id: int,
    in_range: bool,
    actor: Actor,
    now: datetime,
) -> dict[str, Any]:
    """The column values of a new allocation (every column but ``id``)."""
    return {
        "mac": mac,
        "pool_id": pool_id,
        "scope_id": scope_id,
        **owner_columns(checked),
        "in_range": in_range,
        "created_by": str(actor)[:255],
        "created_at": now,
        "updated_at": now,
        "handover": None,
        "source": None,
        "source_key": None,
    }


#: Up to this many rows, one prepared insert per row beats one multi-row ``RETURNING`` insert
#: (whose statement SQLAlchemy builds per call); a webhook group commit writes a few rows.
FEW_ROWS = 16


def insert_allocations(
    conn: Connection, rows: Sequence[dict[str, Any]], *, bound: Sequence[Any] | None = None
) -> list[int]:
    """Insert allocation rows (one statement per row, or executemany); their ids in row order.

    ``bound``: the rows' values from :func:`bind_allocations`, bound before the transaction.
    """
    if not rows:
        return []
    if len(rows) <= FEW_ROWS:
        return [_INSERT_ALLOCATION.scalar(conn, row) for row in rows]
    after = _LAST_ALLOCATION_ID.scalar(conn, {}) or 0
    if bound is not None:
        _INSERT_ALLOCATIONS.run_bound(conn, bound)
    else:
        _INSERT_ALLOCATIONS.run_many(conn, rows)
    ids = {tuple(found[1:]): found[0] for found in _ALLOCATIONS_AFTER.rows(conn, {"after": after})}
    return [
        ids[(row["scope_id"], row["owner_kind"], row["owner_name"], row["interface"])]
        for row in rows
    ]


def persistent_allocation(
    session: Session, row: dict[str, Any], *, scope: Scope, pool: Pool
) -> Allocation:
    """The ORM object of a row just inserted, persistent in the session, scope and pool set.

    Built from the values written rather than read back: no query, no flush.
    """
    allocation = detached(Allocation, row)
    set_committed_value(allocation, "scope", scope)
    set_committed_value(allocation, "pool", pool)
    session.add(allocation)
    # Count it as created by the current (possibly nested) transaction, as a flush would: a
    # rollback then expunges it instead of leaving a row that no longer exists in the session.
    transaction = session._transaction
    if transaction is not None:
        transaction._new[inspect(allocation)] = True
    return allocation


def written_allocation(row: dict[str, Any], *, scope: Scope, pool: Pool) -> Allocation:
    """An ORM object holding a row just inserted: every column, its scope and pool set, in no
    session (transient: nothing on it loads; giving it the identity of a persistent object cost
    as much as the insert)."""
    allocation: Allocation = manager_of_class(Allocation).new_instance()
    allocation.__dict__.update(row)
    set_committed_value(allocation, "scope", scope)
    set_committed_value(allocation, "pool", pool)
    return allocation


def moved_allocation(
    session: Session, row: dict[str, Any], *, scope: Scope, pool: Pool
) -> Allocation:
    """The ORM object of a row just updated (a hand-over), from the values written: the one the
    session holds, refreshed, or a persistent one built without a query."""
    allocation = session.identity_map.get(session.identity_key(Allocation, (row["id"],)))
    if allocation is None:
        allocation = detached(Allocation, row)
        session.add(allocation)
    else:
        for key, value in row.items():
            set_committed_value(allocation, key, value)
    set_committed_value(allocation, "scope", scope)
    set_committed_value(allocation, "pool", pool)
    return allocation


def audit_row(
    actor: Actor,
    *,
    action: str,
    target_type: str,
    target_id: object,
    target: str,
    details: dict[str, Any],
    now: datetime,
    severity: str = "info",
) -> dict[str, Any]:
    """An audit event's column values, as ``record_event`` would store them."""
    return {
        "at": now,
        "actor": str(actor)[:255],
        "action": action,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "target": target[:512],
        "severity": severity,
        "details": details,
    }


def creation_event(
    actor: Actor,
    *,
    mac: str,
    allocation_id: int | None,
    scope: str,
    owner_kind: str,
    owner_name: str,
    interface: str,
    pool: str,
    state: str,
    requested: bool,
    in_range: bool,
    now: datetime,
    **more: Any,
) -> dict[str, Any]:
    """The ``allocation.create`` event of an owner's new allocation (``more``: how it came:
    ``reserved`` for a reserve's answer, ``reserved_by`` for an adopted reservation)."""
    return audit_row(
        actor,
        action="allocation.create",
        target_type="mac",
        target_id=mac,
        target=mac,
        details={
            "allocation_id": allocation_id,
            "scope": scope,
            "owner_kind": owner_kind,
            "owner_name": owner_name,
            "interface": interface,
            "pool": pool,
            "state": state,
            "requested": requested,
            "in_range": in_range,
            **more,
        },
        now=now,
    )


def bind_allocations(dialect: Dialect, rows: Sequence[dict[str, Any]]) -> list[Any] | None:
    """The DBAPI values of many allocation rows for :func:`insert_allocations` (None for a few
    rows, which are inserted one by one)."""
    return None if len(rows) <= FEW_ROWS else _INSERT_ALLOCATIONS.bind_many(dialect, rows)


def insert_audit(
    conn: Connection, rows: Sequence[dict[str, Any]], *, bound: Sequence[Any] | None = None
) -> None:
    """Insert audit events; ``bound``: their values from :func:`bind_audit`, bound before the
    transaction, whose details are bound again here (they may have changed since)."""
    if not rows:
        return
    if bound is None:
        _INSERT_AUDIT.run_many(conn, rows)
        return
    slot, process = _INSERT_AUDIT.bound_slot(conn.dialect, "details")
    for values, row in zip(bound, rows, strict=True):
        values[slot] = row["details"] if process is None else process(row["details"])
    _INSERT_AUDIT.run_bound(conn, bound)


def bind_audit(dialect: Dialect, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """The DBAPI values of audit events for :func:`insert_audit`."""
    return _INSERT_AUDIT.bind_many(dialect, rows)


def utc_now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


__all__ = [
    "DEFAULT_LOW_THRESHOLD",
    "HANDOVER_SOURCE_KINDS",
    "MAX_TTL_SECONDS",
    "RESERVATION_KIND",
    "STATES",
    "AllocationRequest",
    "AllocationResult",
    "CheckedRequest",
    "Handover",
    "advance_pool",
    "allocation_row",
    "audit_row",
    "availability_warning",
    "check_request",
    "connection",
    "containing_pool_ids",
    "describe_holder",
    "holder_sentence",
    "holders_of",
    "identity_id",
    "insert_allocations",
    "insert_audit",
    "insert_changes",
    "insert_held",
    "insert_held_if_free",
    "lock_held",
    "low_threshold",
    "moved_allocation",
    "owner_columns",
    "persistent_allocation",
    "utc_now",
    "write_pool",
    "written_allocation",
]
