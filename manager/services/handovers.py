"""Migration hand-overs: a migrated VM takes the MACs of the VM it was copied from.

A VM moved from oVirt to KubeVirt (or between KubeVirt clusters) keeps its MACs. Its copy
identifies itself with the source VM's id (Forklift's ``vmID`` label); a requested MAC held by
an allocation of that very VM (owner kinds :data:`HANDOVER_SOURCE_KINDS`, ``owner_uid`` equal
to the id) is then not a conflict: the allocation row itself moves to the copy, so the MAC
never becomes free and stays unique. The row remembers what it was (``source``) and is
``pending`` until the move is final:

- releasing a pending hand-over (the copy deleted, a failed or cancelled plan, its webhook
  allocation never confirmed) gives the MAC back to the source VM, never to the free pool;
- it becomes ``final`` when the copy has run or an operator completes it; from then on the
  source owner is gone and a release frees the MAC as usual.

The kernel (:mod:`manager.services.bulk_allocations`) plans the move; this module holds the
rules of the move itself, the give-back and the completion.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import InvalidInput
from manager.core.mac import format_mac_int
from manager.db import Allocation, Pool, Scope
from manager.db.prepared import Prepared
from manager.services.allocation_rows import (
    FEW_ROWS,
    HANDOVER_SOURCE_KINDS,
    RESERVATION_KIND,
    CheckedRequest,
    describe_holder,
    owner_columns,
)
from manager.services.audit import record_event
from manager.services.common import check_id
from manager.services.pool_counters import apply_changes, mac_shares
from manager.services.pools import containing_pool

#: Fields of an allocation that a hand-over changes and a give-back restores.
_MOVED = _MOVED_COLUMNS = (
    "scope_id",
    "pool_id",
    "owner_kind",
    "owner_name",
    "owner_uid",
    "interface",
    "state",
    "expires_at",
    "in_range",
    "transaction",
)

_alloc: Table = Allocation.__table__  # type: ignore[assignment]
_scope: Table = Scope.__table__  # type: ignore[assignment]
_pool: Table = Pool.__table__  # type: ignore[assignment]
#: Every holder of a MAC, as plain rows with its scope path and pool name (no ORM objects).
_HOLDER_ROWS = Prepared(
    select(*_alloc.columns, _scope.c.path, _pool.c.name)
    .join(_scope, _scope.c.id == _alloc.c.scope_id)
    .join(_pool, _pool.c.id == _alloc.c.pool_id)
    .where(_alloc.c.mac == bindparam("mac"))
    .order_by(_alloc.c.id)
)
_COLUMNS = tuple(c.key for c in _alloc.columns)
#: The move itself: every column a hand-over changes, by id.
_MOVE = Prepared(
    update(_alloc)
    .where(_alloc.c.id == bindparam("allocation_id"))
    .values(
        {
            key: bindparam(key)
            for key in (*_MOVED_COLUMNS, "handover", "source", "source_key", "updated_at")
        }
    )
)

PENDING = "pending"
FINAL = "final"

#: An owner identity: (scope id, owner kind, owner name, interface).
IdentityKey = tuple[int, str, str, str]


def identity_key(scope_id: int, owner_kind: str, owner_name: str, interface: str) -> str:
    """An owner identity as one string, the ``source_key`` of a pending hand-over taken from it.

    The interface's length makes it unambiguous (names and interfaces may contain ``:``).
    """
    return f"{scope_id}:{owner_kind}:{len(interface)}:{interface}:{owner_name}"


_SOURCE_KEY = Prepared(
    select(_alloc.c.id, _alloc.c.mac, _alloc.c.owner_uid, _alloc.c.source_key).where(
        _alloc.c.source_key == bindparam("source_key")
    )
)


def pending_sources(conn: Connection, identities: Iterable[IdentityKey]) -> dict[IdentityKey, Any]:
    """The pending hand-overs taken from any of these owner identities, by identity.

    Each is a row (id, mac, owner_uid, source_key) of the allocation as it is now (the copy's).
    The identity stays taken while its hand-over is pending: the MAC goes back to it if the
    hand-over is reverted. Only identities of :data:`HANDOVER_SOURCE_KINDS` can be sources.
    """
    by_key = {
        identity_key(*identity): identity
        for identity in identities
        if identity[1] in HANDOVER_SOURCE_KINDS
    }
    keys = sorted(by_key)
    rows: list[Any] = []
    if len(keys) <= FEW_ROWS:  # one VM's NICs: prepared lookups (an index probe each)
        for key in keys:
            rows.extend(_SOURCE_KEY.rows(conn, {"source_key": key}))
    else:
        columns = (_alloc.c.id, _alloc.c.mac, _alloc.c.owner_uid, _alloc.c.source_key)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows.extend(conn.execute(select(*columns).where(_alloc.c.source_key.in_(chunk))))
    return {by_key[row[3]]: row for row in rows}


HANDOVER_STATES = (PENDING, FINAL)


class Holder(Protocol):
    """What the hand-over rule reads of a MAC's holder (an Allocation or a StoredHolder)."""

    @property
    def id(self) -> int: ...
    @property
    def owner_kind(self) -> str: ...
    @property
    def owner_uid(self) -> str | None: ...
    @property
    def handover(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StoredHolder:
    """A holder of a MAC as a plain row: every column, its scope's path and its pool's name."""

    row: dict[str, Any]
    scope_path: str
    pool_name: str

    @property
    def id(self) -> int:
        return int(self.row["id"])

    @property
    def owner_kind(self) -> str:
        return str(self.row["owner_kind"])

    @property
    def owner_uid(self) -> str | None:
        uid = self.row["owner_uid"]
        return None if uid is None else str(uid)

    @property
    def handover(self) -> str | None:
        state = self.row["handover"]
        return None if state is None else str(state)

    def describe(self) -> dict[str, Any]:
        """As :func:`~manager.services.allocation_rows.describe_holder` describes a holder."""
        row = self.row
        return {
            "allocation_id": row["id"],
            "owner_kind": row["owner_kind"],
            "owner_name": row["owner_name"],
            "owner_uid": row["owner_uid"],
            "interface": row["interface"],
            "scope": self.scope_path,
            "pool": self.pool_name,
            "pool_id": row["pool_id"],
            "state": row["state"],
        }


def stored_holders(conn: Connection, mac: int) -> list[StoredHolder]:
    """Every holder of ``mac``, oldest first, read as rows (one prepared query)."""
    return [
        StoredHolder(dict(zip(_COLUMNS, row[:-2], strict=True)), row[-2], row[-1])
        for row in _HOLDER_ROWS.rows(conn, {"mac": mac})
    ]


H = TypeVar("H", bound=Holder)


def handover_source(holders: Iterable[H], source_uid: str | None, *, taken: set[int]) -> H | None:
    """The holder whose MAC the request may take over, if any.

    It must be an allocation of the VM the requester says it was migrated from, and not in
    the middle of another hand-over (a second copy of the same VM gets no MAC of the first).
    ``source_uid``: the id of the VM the requester was migrated from (None: not migrated);
    ``taken``: ids of holders moved earlier in the same batch.
    """
    if source_uid is None:
        return None
    for holder in holders:
        if (
            holder.owner_kind in HANDOVER_SOURCE_KINDS
            and holder.owner_uid == source_uid
            and holder.handover != PENDING
            and holder.id not in taken
        ):
            return holder
    return None


def reserved_holder(holders: Iterable[H], *, taken: set[int]) -> H | None:
    """The MAC's holder that is a reservation made ahead (by a webhook process), if any.

    A request that carries the MAC on its object already (``adopt_reserved``) takes it over:
    the process that reserved it answered it to this object, then died or has not recorded
    the answer yet. Nobody else can take a reserved MAC.
    """
    for holder in holders:
        if holder.owner_kind == RESERVATION_KIND and holder.id not in taken:
            return holder
    return None


def adoption_values(
    checked: CheckedRequest, *, scope_id: int, pool_id: int, in_range: bool, now: datetime
) -> dict[str, Any]:
    """The new column values of a reservation taken over by the requester (a plain move)."""
    return {
        "scope_id": scope_id,
        "pool_id": pool_id,
        **owner_columns(checked),
        "in_range": in_range,
        "handover": None,
        "source": None,
        "source_key": None,
        "updated_at": now,
    }


def handover_values(
    holder: StoredHolder,
    checked: CheckedRequest,
    *,
    scope_id: int,
    pool_id: int,
    in_range: bool,
    now: datetime,
) -> dict[str, Any]:
    """The new column values of ``holder`` when it moves to the requester."""
    assert checked.handover is not None
    row = holder.row
    source = {key: row[key] for key in _MOVED}
    if row["expires_at"] is not None:
        source["expires_at"] = row["expires_at"].isoformat()
    source.update(
        allocation_id=row["id"],
        scope=holder.scope_path,
        pool=holder.pool_name,
        plan=checked.handover.plan,
        migration=checked.handover.migration,
        created_by=row["created_by"],
    )
    return {
        "scope_id": scope_id,
        "pool_id": pool_id,
        **owner_columns(checked),
        "in_range": in_range,
        "handover": PENDING,
        "source": source,
        "source_key": identity_key(
            row["scope_id"], row["owner_kind"], row["owner_name"], row["interface"]
        ),
        "updated_at": now,
    }


def move(conn: Connection, holder: StoredHolder, values: dict[str, Any]) -> dict[str, Any]:
    """Write a planned hand-over; the allocation's row as it is now."""
    _MOVE.run(conn, {"allocation_id": holder.id, **values})
    return {**holder.row, **values}


def handover_event_details(
    holder: StoredHolder, values: dict[str, Any], scope_path: str, pool_name: str
) -> dict[str, Any]:
    """Details of the ``allocation.handover`` audit event: from whom, to whom, which plan."""
    source = values["source"]
    return {
        "allocation_id": holder.id,
        "from": holder.describe(),
        "to": {
            "owner_kind": values["owner_kind"],
            "owner_name": values["owner_name"],
            "owner_uid": values["owner_uid"],
            "interface": values["interface"],
            "scope": scope_path,
            "pool": pool_name,
            "state": values["state"],
        },
        "source_vm": {"name": holder.row["owner_name"], "id": holder.owner_uid},
        "plan": source.get("plan"),
        "migration": source.get("migration"),
    }


def give_back(session: Session, actor: Actor, allocation: Allocation, *, reason: str) -> None:
    """Return a pending hand-over's MAC to the VM it was taken from (the row moves back)."""
    source = dict(allocation.source or {})
    home = containing_pool(session, allocation.mac)
    home_id = None if home is None else home.id
    conn = session.connection()
    before = mac_shares(conn, allocation.mac, home_id)
    taken_by = describe_holder(allocation)
    for key in _MOVED:
        value = source.get(key)
        if key == "expires_at" and isinstance(value, str):
            value = datetime.fromisoformat(value)
        setattr(allocation, key, value)
    allocation.handover = None
    allocation.source = None
    allocation.source_key = None
    session.flush()
    session.expire(allocation, ["scope", "pool"])
    apply_changes(session, [(before, mac_shares(conn, allocation.mac, home_id))])
    _mac_event(
        session,
        actor,
        "allocation.handover_reverted",
        allocation,
        reason=reason,
        taken_from=taken_by,
        returned_to=describe_holder(allocation),
        plan=source.get("plan"),
        migration=source.get("migration"),
    )


def _mac_event(
    session: Session, actor: Actor, action: str, allocation: Allocation, **details: Any
) -> None:
    """Record a hand-over event of the allocation's MAC."""
    mac = format_mac_int(allocation.mac)
    record_event(
        session,
        actor,
        action=action,
        target_type="mac",
        target_id=mac,
        target=mac,
        details={"allocation_id": allocation.id, **details},
    )


def complete_handovers(
    session: Session,
    actor: Actor,
    *,
    allocation_id: int | None = None,
    plan: str | None = None,
    scope_id: int | None = None,
    owner_kind: str | None = None,
    owner_name: str | None = None,
    reason: str = "completed",
) -> list[Allocation]:
    """Make pending hand-overs final: of one allocation, of a migration plan, or of one VM.

    Final means the source VM no longer owns the MAC: a later release frees it. Returns the
    allocations completed (none when nothing matched: completing twice is harmless).
    """
    by_owner = owner_name is not None
    if sum((allocation_id is not None, plan is not None, by_owner)) != 1:
        raise InvalidInput(
            "Name exactly one of: an allocation id, a plan id, or a VM (scope and owner).",
            field="plan",
        )
    query = select(Allocation).where(Allocation.handover == PENDING)
    if allocation_id is not None:
        query = query.where(Allocation.id == check_id(allocation_id, "an allocation"))
    if by_owner:
        query = query.where(
            Allocation.scope_id == scope_id,
            Allocation.owner_kind == (owner_kind or "vm"),
            Allocation.owner_name == owner_name,
        )
    found = [
        a
        for a in session.scalars(query.order_by(Allocation.id).with_for_update(of=Allocation))
        if plan is None or (a.source or {}).get("plan") == plan
    ]
    for allocation in found:
        allocation.handover = FINAL
        allocation.source_key = None  # the source VM is gone: its identity is free again
        source = allocation.source or {}
        _mac_event(
            session,
            actor,
            "allocation.handover_final",
            allocation,
            reason=reason,
            owner=describe_holder(allocation),
            source_vm={"name": source.get("owner_name"), "id": source.get("owner_uid")},
            plan=source.get("plan"),
            migration=source.get("migration"),
        )
    session.flush()
    return found


def pending_handovers(session: Session) -> int:
    """How many hand-overs are not final yet."""
    return session.scalar(select(func.count()).where(Allocation.handover == PENDING)) or 0


def describe_source(allocation: Allocation) -> dict[str, Any] | None:
    """Where a handed-over allocation came from, as the API and UI show it."""
    source = allocation.source
    if not source:
        return None
    keys: Sequence[str] = (
        "owner_kind",
        "owner_name",
        "owner_uid",
        "interface",
        "scope",
        "pool",
        "created_by",
        "plan",
        "migration",
    )
    return {key: source.get(key) for key in keys}


__all__ = [
    "FINAL",
    "HANDOVER_STATES",
    "PENDING",
    "Holder",
    "IdentityKey",
    "StoredHolder",
    "adoption_values",
    "complete_handovers",
    "describe_source",
    "give_back",
    "handover_event_details",
    "handover_source",
    "handover_values",
    "identity_key",
    "move",
    "pending_handovers",
    "pending_sources",
    "reserved_holder",
    "stored_holders",
]
