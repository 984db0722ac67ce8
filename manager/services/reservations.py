"""MACs reserved ahead: a channel answers from them at once and records the owner afterwards.

The Kubernetes webhook must answer a VM CREATE in a few hundred microseconds, less than one
write transaction costs. So a webhook process reserves a block of MACs of a pool in one
transaction (``reserve_macs``: ordinary pending allocations of owner kind ``reservation``,
through the allocation kernel, so the held-MAC constraint and every pool rule apply), answers
reviews from the block, and records the answers in batches (``record_answers``): each
reservation row becomes the VM's pending allocation in place. The invariants and why they hold
are in docs/RESERVED_MACS.md; in short:

- uniqueness is the database's: a reserved MAC is held like any other;
- nobody else can take a reserved MAC; only an object that carries it already
  (``adopt_reserved``, the reconciler reading the object back) takes the reservation over, so a
  MAC answered by a process that died before recording it still ends with its VM;
- a reservation expires like any pending allocation: unused, it returns within its TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Table, and_, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import MacPoolError, NotFound
from manager.core.mac import MacAddress, format_mac_int
from manager.db import Allocation, Database, Generation, HeldMac, Pool
from manager.db.generation import TOPOLOGY
from manager.db.generation import current as current_generation
from manager.db.prepared import Prepared
from manager.services.allocation_rows import (
    RESERVATION_KIND,
    AllocationRequest,
    advance_pool,
    connection,
    containing_pool_ids,
    creation_event,
    insert_audit,
    insert_changes,
    write_pool,
)
from manager.services.allocations import release_allocation
from manager.services.audit import record_event
from manager.services.bulk_allocations import allocate_macs, allocate_rows
from manager.services.common import lock_pools
from manager.services.index_cache import pool_ranges
from manager.services.pool_counters import NONE, apply_changes, shares_of
from manager.services.scopes import planned_pool_id, scope_and_pool_id

_alloc: Table = Allocation.__table__  # type: ignore[assignment]
_gen: Table = Generation.__table__  # type: ignore[assignment]
_held: Table = HeldMac.__table__  # type: ignore[assignment]

#: The topology generation and what an owner holds in a scope, in one statement (one snapshot).
_OWNER_SNAPSHOT = Prepared(
    select(_gen.c.value, _alloc.c.interface, _alloc.c.mac)
    .select_from(_gen)
    .outerjoin(
        _alloc,
        and_(
            _alloc.c.scope_id == bindparam("scope_id"),
            _alloc.c.owner_kind == bindparam("owner_kind"),
            _alloc.c.owner_name == bindparam("owner_name"),
        ),
    )
    .where(_gen.c.name == TOPOLOGY)
)

#: An answered reservation becomes its owner's pending allocation, in place (same MAC, pool).
_RECORD = Prepared(
    update(_alloc)
    .where(_alloc.c.id == bindparam("reservation_id"), _alloc.c.owner_kind == RESERVATION_KIND)
    .values(
        scope_id=bindparam("scope_id"),
        owner_kind=bindparam("kind"),
        owner_name=bindparam("name"),
        owner_uid=bindparam("uid"),
        interface=bindparam("iface"),
        expires_at=bindparam("expires"),
        transaction=bindparam("stamp"),
        updated_at=bindparam("now"),
    )
)

#: A reservation leaves this much of its TTL unused: answers are recorded well before it ends.
MIN_MARGIN: Final = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Reserved:
    """One reserved MAC: the reservation's allocation id, the MAC, when it stops being usable."""

    id: int
    mac: int
    usable_until: datetime


@dataclass(frozen=True, slots=True)
class Answer:
    """A MAC answered from a reservation to an owner's interface; recorded afterwards."""

    reservation_id: int
    mac: int
    #: None: the owner's scope does not exist yet; the answer is recorded once it is made
    #: (:func:`record_answers` takes only answers with a scope).
    scope_id: int | None
    owner_kind: str
    owner_name: str
    owner_uid: str | None
    interface: str
    transaction: str | None
    #: When the owner's pending allocation expires unless its object shows up (answer + TTL).
    expires_at: datetime
    pool_name: str
    scope_path: str


@dataclass(frozen=True, slots=True)
class Target:
    """A scope and its effective pool, as of one topology generation.

    ``scope_id`` None: a planned target, the scope at ``scope_path`` does not exist yet and
    ``pool_id`` is the pool it would inherit when made.
    """

    generation: int
    scope_id: int | None
    scope_path: str
    pool_id: int
    pool_name: str


def usable_margin(ttl_seconds: int) -> timedelta:
    """How long before its expiry a reservation stops being handed out."""
    return max(MIN_MARGIN, timedelta(seconds=ttl_seconds / 4))


def resolve_target(database: Database, path: str, *, planned: bool = False) -> Target | None:
    """The scope at ``path`` and its effective pool with the generation they are valid for.

    A missing scope gives None, or with ``planned`` a planned target: the pool a scope made
    there would inherit from its nearest existing ancestor (None if there is none).
    """
    with database.session() as session:
        generation = current_generation(session.connection())
        scope_id: int | None
        try:
            scope, pool_id = scope_and_pool_id(session, path)
            scope_id, path = scope.id, scope.path
        except NotFound:
            if not planned:
                return None
            try:
                pool_id = planned_pool_id(session, path)
            except NotFound:
                return None
            scope_id = None
        pool = session.get(Pool, pool_id)
        assert pool is not None
        return Target(generation, scope_id, path, pool_id, pool.name)


def owner_snapshot(
    database: Database, *, scope_id: int, owner_kind: str, owner_name: str
) -> tuple[int, dict[str, int]]:
    """The topology generation and the owner's interface → MAC, read in one statement."""
    rows = database.autocommit_rows(
        _OWNER_SNAPSHOT,
        {"scope_id": scope_id, "owner_kind": owner_kind, "owner_name": owner_name},
    )
    if not rows:  # a schema made without the migration's generation row
        with database.engine.connect() as conn:
            return current_generation(conn), {}
    return int(rows[0][0]), {iface: mac for _, iface, mac in rows if iface is not None}


def free_count(session: Session, pool_id: int) -> int:
    """MACs of the pool's ranges that nobody holds."""
    pool = session.get(Pool, pool_id)
    if pool is None:
        raise NotFound(f"Pool {pool_id} does not exist.")
    return max(0, pool_ranges(pool).size - pool.held_count)


def reserve_macs(
    session: Session,
    actor: Actor,
    *,
    target: Target,
    holder: str,
    first: int,
    count: int,
    ttl_seconds: int,
    keep_free: int,
) -> list[Reserved]:
    """Reserve up to ``count`` MACs of the target's pool for ``holder``; fewer when the pool
    has less than ``keep_free`` free MACs to spare (a reserve never starves other users).

    Each is an ordinary pending allocation of owner kind ``reservation`` (interfaces
    ``r<first>``, ``r<first+1>``, …) made by the allocation kernel; it expires after
    ``ttl_seconds`` unless recorded to an owner first.
    """
    if target.scope_id is None:
        raise ValueError("Reservations live in an existing scope, not a planned one.")
    count = min(count, free_count(session, target.pool_id) - keep_free)
    if count <= 0:
        return []
    now = datetime.now(UTC)
    owner = Owner(kind=RESERVATION_KIND, name=holder)
    requests = [
        AllocationRequest(target.scope_id, owner, f"r{first + i}", ttl_seconds=ttl_seconds)
        for i in range(count)
    ]
    # The holder names a process incarnation and its interfaces count up: no identity of a
    # block is held yet (the unique constraint would refuse one, writing nothing).
    rows = allocate_rows(session, actor, requests, now=now, each_event=False, unheld=True)
    macs = sorted(mac for _, mac in rows)
    record_event(
        session,
        actor,
        action="allocation.reserve",
        target_type="pool",
        target_id=str(target.pool_id),
        target=target.pool_name,
        details={
            "holder": holder,
            "count": len(macs),
            "first": format_mac_int(macs[0]),
            "last": format_mac_int(macs[-1]),
            "scope": target.scope_path,
            "ttl_seconds": ttl_seconds,
        },
    )
    until = now + timedelta(seconds=ttl_seconds) - usable_margin(ttl_seconds)
    return [Reserved(row_id, mac, until) for row_id, mac in rows]


def record_answers(session: Session, actor: Actor, answers: Sequence[Answer]) -> list[Answer]:
    """Make each answered reservation its owner's pending allocation; the answers not recorded.

    All at once when every reservation is still there and no owner identity is taken (one
    UPDATE per row, executed as one batch, and their audit events); when that misses some,
    the answers the reconciler adopted meanwhile are left out and the rest tried at once
    again. Otherwise each goes through the allocation kernel alone, taking the reservation over (``adopt_reserved``): an
    answer whose owner already holds the MAC (the reconciler saw the object first) is done; one
    that the kernel refuses (the owner's interface holds another MAC: a concurrent answer of
    another process was recorded first) keeps its reservation, which expires unless the
    object turns out to carry this MAC (then the reconciler takes it over).
    """
    if not answers:
        return []
    if any(answer.scope_id is None for answer in answers):
        raise ValueError("An answer is recorded once its owner's scope exists.")
    answers = list(answers)
    now = datetime.now(UTC)
    for first_try in (True, False):
        try:
            with session.begin_nested():
                conn = session.connection()  # inside: the SAVEPOINT is emitted before the UPDATE
                done = _RECORD.count_many(conn, _record_params(answers, now))
                if done != len(answers):
                    raise _Redo
                insert_audit(conn, [_event(actor, a, now) for a in answers])
            return []
        except (_Redo, IntegrityError):
            pass
        if first_try:
            answers = _not_yet_adopted(session, answers)
            if not answers:
                return []
    refused: list[Answer] = []
    for answer in answers:
        try:
            with session.begin_nested():
                _record_one(session, actor, answer)
        except MacPoolError:
            refused.append(answer)
    return refused


def _not_yet_adopted(session: Session, answers: Sequence[Answer]) -> list[Answer]:
    """The answers whose reservation is not already the answered owner's allocation.

    The reconciler may see the object before the answer is recorded (it waits a moment for the
    recording first): it then adopts the reservation through the kernel (same row, same MAC,
    its own audit event), and recording that answer again has nothing left to do. When the
    batch UPDATE missed rows, one read tells these apart, so that the batch is retried without
    them instead of running the kernel answer by answer.
    """
    rows = {
        row.id: row
        for row in session.execute(
            select(
                _alloc.c.id,
                _alloc.c.scope_id,
                _alloc.c.owner_kind,
                _alloc.c.owner_name,
                _alloc.c.interface,
                _alloc.c.mac,
            ).where(_alloc.c.id.in_([a.reservation_id for a in answers]))
        )
    }
    left = []
    for answer in answers:
        row = rows.get(answer.reservation_id)
        adopted = row is not None and (
            row.scope_id,
            row.owner_kind,
            row.owner_name,
            row.interface,
            row.mac,
        ) == (answer.scope_id, answer.owner_kind, answer.owner_name, answer.interface, answer.mac)
        if not adopted:
            left.append(answer)
    return left


def _record_params(answers: Sequence[Answer], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "reservation_id": a.reservation_id,
            "scope_id": a.scope_id,
            "kind": a.owner_kind,
            "name": a.owner_name,
            "uid": a.owner_uid,
            "iface": a.interface,
            "expires": a.expires_at,
            "stamp": a.transaction,
            "now": now,
        }
        for a in answers
    ]


class _Redo(Exception):
    """Some answer cannot take the batch path."""


def _record_one(session: Session, actor: Actor, answer: Answer) -> None:
    ttl = max(1, int((answer.expires_at - datetime.now(UTC)).total_seconds()))
    owner = Owner(kind=answer.owner_kind, name=answer.owner_name, uid=answer.owner_uid)
    assert answer.scope_id is not None  # checked by record_answers
    request = AllocationRequest(
        answer.scope_id,
        owner,
        answer.interface,
        mac=MacAddress(answer.mac),
        ttl_seconds=ttl,
        transaction=answer.transaction,
        adopt_reserved=True,
    )
    allocate_macs(session, actor, [request])


def _event(actor: Actor, answer: Answer, now: datetime) -> dict[str, Any]:
    return creation_event(
        actor,
        mac=format_mac_int(answer.mac),
        allocation_id=answer.reservation_id,
        scope=answer.scope_path,
        owner_kind=answer.owner_kind,
        owner_name=answer.owner_name,
        interface=answer.interface,
        pool=answer.pool_name,
        state="pending",
        requested=False,
        in_range=True,
        now=now,
        reserved=True,
    )


def release_reservations(
    session: Session, actor: Actor, ids: Sequence[int], *, reason: str = "unused"
) -> int:
    """Release reservations that were never answered (those taken meanwhile are skipped).

    Set-wise: a reserved MAC has no other holder (nobody can share it, except as a duplicate
    in a pool that allows them: those go through ``release_allocation`` one by one), so its
    rows go in a few statements, its pool's index moves on by one change row each, the
    statistics follow, and one audit event names the block.
    """
    conn = connection(session)
    rows: list[tuple[int, int]] = []
    for chunk in _chunks(list(ids)):
        rows += [
            (int(id_), int(mac))
            for id_, mac in session.execute(
                select(_alloc.c.id, _alloc.c.mac).where(
                    _alloc.c.id.in_(chunk), _alloc.c.owner_kind == RESERVATION_KIND
                )
            )
        ]
    if not rows:
        return 0
    counts: dict[int, int] = {}
    for chunk in _chunks([mac for _, mac in rows]):
        found = session.execute(
            select(_alloc.c.mac, func.count()).where(_alloc.c.mac.in_(chunk)).group_by(_alloc.c.mac)
        )
        counts.update((int(mac), int(count)) for mac, count in found)
    for id_, mac in rows:
        if counts[mac] > 1:
            release_allocation(session, actor, id_, reason=reason)
    single = [(id_, mac) for id_, mac in rows if counts[mac] == 1]
    if single:
        macs = [mac for _, mac in single]
        homes = containing_pool_ids(conn, macs)
        pools = lock_pools(session, sorted(set(homes.values())), load_ranges=False)
        before = shares_of(conn, macs, homes)
        for chunk in _chunks([id_ for id_, _ in single]):
            session.execute(delete(_alloc).where(_alloc.c.id.in_(chunk)))
        for chunk in _chunks(macs):
            session.execute(delete(_held).where(_held.c.mac.in_(chunk)))
        apply_changes(session, [(before[mac], NONE) for mac in macs])
        now = datetime.now(UTC)
        for pool_id, pool in pools.items():
            gone = [mac for mac in macs if homes.get(mac) == pool_id]
            insert_changes(conn, advance_pool(pool, gone, held=False))
            write_pool(conn, pool, cursor=pool.cursor, now=now)
    record_event(
        session,
        actor,
        action="allocation.unreserve",
        target_type="reservation",
        target=reason,
        details={
            "count": len(rows),
            "reason": reason,
            "macs": [format_mac_int(m) for _, m in rows][:64],
        },
    )
    return len(rows)


def _chunks(values: list[Any], size: int = 500) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def expire_reservations(session: Session, actor: Actor, *, now: datetime | None = None) -> int:
    """Release every reservation whose time ran out, whoever made it (a process that died)."""
    expired = session.scalars(
        select(_alloc.c.id).where(
            _alloc.c.owner_kind == RESERVATION_KIND,
            _alloc.c.state == "pending",
            _alloc.c.expires_at <= (now or datetime.now(UTC)),
        )
    ).all()
    return release_reservations(session, actor, expired, reason="expired")


def reservations_of(session: Session, holder: str) -> list[int]:
    """Ids of the reservations ``holder`` still has."""
    return list(
        session.scalars(
            select(_alloc.c.id).where(
                _alloc.c.owner_kind == RESERVATION_KIND, _alloc.c.owner_name == holder
            )
        )
    )


__all__ = [
    "RESERVATION_KIND",
    "Answer",
    "Reserved",
    "Target",
    "expire_reservations",
    "free_count",
    "owner_snapshot",
    "record_answers",
    "release_reservations",
    "reservations_of",
    "reserve_macs",
    "resolve_target",
    "usable_margin",
]
