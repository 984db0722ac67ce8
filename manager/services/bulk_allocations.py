"""Many allocations in one call (importers): the rules of ``allocate_mac``, applied set-wise.

The outcome equals calling :func:`~manager.services.allocations.allocate_mac` once per request,
first for every request naming a MAC (in batch order), then for every automatic one (in batch
order), so an automatic MAC never takes a MAC that a later request of the batch asks for. The
work is done per batch, not per request: each pool is locked once, held MACs and existing owner
identities are read with one query per chunk, and the rows are written with executemany
inserts. Every check runs before anything is written: a refused batch writes nothing, and its
error names the offending request (index, owner, interface, MAC).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from manager.core.actor import Actor
from manager.core.errors import (
    InterfaceInUse,
    MacInUse,
    MacPoolError,
    OutsidePool,
    PoolExhausted,
)
from manager.core.index import HeldIndex, next_free_mac
from manager.core.mac import format_mac_int
from manager.core.ranges import RangeSet
from manager.db import Allocation, HeldMac, Pool, PoolRange, Scope
from manager.db.prepared import Prepared
from manager.services.allocation_rows import (
    FEW_ROWS,
    AllocationRequest,
    AllocationResult,
    CheckedRequest,
    advance_pool,
    allocation_row,
    audit_row,
    availability_warning,
    bind_allocations,
    bind_audit,
    check_request,
    connection,
    creation_event,
    describe_holder,
    holder_sentence,
    holders_of,
    insert_allocations,
    insert_audit,
    insert_changes,
    insert_held,
    low_threshold,
    moved_allocation,
    persistent_allocation,
    write_pool,
    written_allocation,
)
from manager.services.common import lock_pools
from manager.services.handovers import (
    StoredHolder,
    adoption_values,
    handover_event_details,
    handover_source,
    handover_values,
    identity_key,
    move,
    pending_sources,
    reserved_holder,
    stored_holders,
)
from manager.services.index_cache import advance_index, pool_index
from manager.services.pool_counters import (
    NONE,
    Shares,
    apply_changes,
    shares_from,
    shares_of,
    single_holder,
)
from manager.services.scopes import scope_and_pool_id, scopes_and_pool_ids

#: Values per ``IN (...)`` list: below every backend's bound-parameter limit.
CHUNK = 500

_IdentityKey = tuple[int, str, str, str]


@dataclass(slots=True)
class _Prior:
    """An owner identity already holding a MAC: in the database (``id``) or in this batch."""

    mac: int
    id: int | None = None
    request: int | None = None
    #: The owner's uid (stored, or of the request of this batch).
    uid: str | None = None
    #: The identity's MAC is in a pending hand-over (row ``id`` is the copy's now): the
    #: identity stays taken until the hand-over is final or reverted.
    handed_over: bool = False


@dataclass(slots=True)
class _BatchHolder:
    """A holder of a MAC created earlier in this batch (for duplicate checks and messages)."""

    pool: Pool
    scope_path: str
    checked: CheckedRequest

    @property
    def sentence(self) -> str:
        c = self.checked
        return (
            f"{c.owner_kind} '{c.owner_name}' interface '{c.interface}' "
            f"in scope {self.scope_path} (pool '{self.pool.name}')"
        )

    @property
    def details(self) -> dict[str, Any]:
        c = self.checked
        return {
            "allocation_id": None,
            "owner_kind": c.owner_kind,
            "owner_name": c.owner_name,
            "owner_uid": c.owner_uid,
            "interface": c.interface,
            "scope": self.scope_path,
            "pool": self.pool.name,
            "pool_id": self.pool.id,
            "state": c.state,
        }


@dataclass(slots=True)
class _PoolState:
    """A locked pool as the batch changes it, before anything is written."""

    pool: Pool
    base: tuple[int, int]
    cursor: int | None
    held_count: int
    low_warned: bool
    held: list[int] = field(default_factory=list)
    index: tuple[RangeSet, HeldIndex] | None = None
    #: The size of the pool's ranges, once known (a sum over the ranges: not per request).
    size: int | None = None
    #: Availability warnings the batch recorded for the pool.
    warnings: int = 0


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


def _named(error: MacPoolError, index: int, checked: CheckedRequest | None, req: Any) -> Exception:
    """The same error, its message and details naming the request of the batch."""
    mac = None
    if checked is not None and checked.requested is not None:
        mac = format_mac_int(checked.requested)
    elif getattr(req, "mac", None) is not None:
        mac = str(req.mac)
    owner = req.owner
    label = f"request {index} ({owner.kind} '{owner.name}' interface '{req.interface}'"
    label += f", MAC {mac})" if mac else ")"
    details = {
        **error.details,
        "request": {
            "index": index,
            "owner_kind": owner.kind,
            "owner_name": owner.name,
            "interface": req.interface,
            "mac": mac,
        },
    }
    named = type(error)(f"{label[0].upper()}{label[1:]}: {error.message}", field=error.field)
    named.details = details
    return named


_alloc: Table = Allocation.__table__  # type: ignore[assignment]
#: The allocation holding an owner identity, or the pending hand-over taken from it.
_IDENTITY = Prepared(
    select(_alloc.c.id, _alloc.c.mac, _alloc.c.owner_uid, _alloc.c.source_key).where(
        or_(
            and_(
                _alloc.c.scope_id == bindparam("scope_id"),
                _alloc.c.owner_kind == bindparam("owner_kind"),
                _alloc.c.owner_name == bindparam("owner_name"),
                _alloc.c.interface == bindparam("interface"),
            ),
            _alloc.c.source_key == bindparam("source_key"),
        )
    )
)


def _existing(
    conn: Connection, keys: dict[int, set[tuple[str, str, str]]]
) -> dict[_IdentityKey, _Prior]:
    """Allocations already holding any of these identities, by (scope id, kind, name, iface).

    An identity whose MAC is in a pending hand-over counts as held (``handed_over``).
    """
    table = Allocation.__table__
    found: dict[_IdentityKey, _Prior] = {}
    wanted = {(scope_id, *identity) for scope_id, ids in keys.items() for identity in ids}
    if len(wanted) <= FEW_ROWS:  # a request of one NIC or one VM: prepared lookups
        for scope_id, kind, name, interface in wanted:
            key = identity_key(scope_id, kind, name, interface)
            held = _IDENTITY.rows(
                conn,
                {
                    "scope_id": scope_id,
                    "owner_kind": kind,
                    "owner_name": name,
                    "interface": interface,
                    "source_key": key,
                },
            )
            # The identity's own row wins over a hand-over taken from it (a state only data
            # written before source keys existed can be in).
            for row_id, mac, uid, source_key in sorted(held, key=lambda r: r[3] == key):
                found[(scope_id, kind, name, interface)] = _Prior(
                    mac, id=row_id, uid=uid, handed_over=source_key == key
                )
                break
        return found
    names = sorted({name for _, _, name, _ in wanted})
    columns = (
        table.c.id,
        table.c.scope_id,
        table.c.owner_kind,
        table.c.owner_name,
        table.c.interface,
        table.c.mac,
        table.c.owner_uid,
    )
    for scope_ids in _chunks(sorted(keys)):
        for chunk in _chunks(names):
            rows = conn.execute(
                select(*columns).where(
                    table.c.scope_id.in_(scope_ids), table.c.owner_name.in_(chunk)
                )
            ).all()
            found.update(_priors(rows, wanted))
    found.update(_handed_over(conn, [k for k in wanted if k not in found]))
    return found


def _handed_over(
    conn: Connection, identities: Iterable[_IdentityKey]
) -> dict[_IdentityKey, _Prior]:
    """Identities whose MAC is in a pending hand-over: taken, though no row holds them now."""
    return {
        identity: _Prior(mac, id=row_id, uid=uid, handed_over=True)
        for identity, (row_id, mac, uid, _) in pending_sources(conn, identities).items()
    }


def _priors(
    rows: Sequence[Any], wanted: set[tuple[int, str, str, str]]
) -> dict[_IdentityKey, _Prior]:
    found: dict[_IdentityKey, _Prior] = {}
    for row_id, scope_id, kind, name, interface, mac, uid in rows:
        if (scope_id, kind, name, interface) in wanted:
            found[(scope_id, kind, name, interface)] = _Prior(mac, id=row_id, uid=uid)
    return found


def homes_of(conn: Connection, macs: Sequence[int]) -> dict[int, int]:
    """The pool whose range contains each MAC (ranges of different pools never overlap)."""
    if not macs:
        return {}
    table = PoolRange.__table__
    rows = conn.execute(
        select(table.c.start_mac, table.c.end_mac, table.c.pool_id).order_by(table.c.start_mac)
    ).all()
    starts = [row.start_mac for row in rows]
    found = {}
    for mac in macs:
        i = bisect_right(starts, mac) - 1
        if i >= 0 and rows[i].end_mac >= mac:
            found[mac] = rows[i].pool_id
    return found


def _held(conn: Connection, macs: Sequence[int], *, lock: bool = True) -> set[int]:
    """Which of these MACs are held; with ``lock``, their rows are locked against a concurrent
    release (a forecast reads without locks)."""
    table = HeldMac.__table__
    held: set[int] = set()
    for chunk in _chunks(macs):
        query = select(table.c.mac).where(table.c.mac.in_(chunk))
        held.update(conn.execute(query.with_for_update() if lock else query).scalars().all())
    return held


class _Batch:
    """Plans a batch in memory (every rule checked), then writes it."""

    def __init__(self, session: Session, actor: Actor, conn: Connection) -> None:
        self.session, self.actor, self.conn = session, actor, conn
        self.threshold = low_threshold(session)
        self.pools: dict[int, _PoolState] = {}
        self.priors: dict[_IdentityKey, _Prior] = {}
        self.held: set[int] = set()
        self.homes: dict[int, int] = {}
        self.db_holders: dict[int, list[Allocation]] = {}
        self.batch_holders: dict[int, list[_BatchHolder]] = {}
        self.new_held: list[int] = []
        #: Requested MACs held already (by the database or this batch), and (effective pool,
        #: MAC) of newly held requested ones: what the pools' statistics counters must follow.
        self.shared: set[int] = set()
        self.fresh: list[tuple[int, int]] = []
        #: Hand-overs: (request index, the holder that moves, its new column values, the
        #: target's scope and pool), and what each moved MAC counts for before and after.
        self.moves: list[tuple[int, StoredHolder, dict[str, Any], Scope, Pool]] = []
        self.moved_shares: dict[int, tuple[Shares, Shares]] = {}
        self.holder_rows: dict[int, list[StoredHolder]] = {}
        self.rows: list[tuple[int, dict[str, Any], Scope, Pool]] = []
        self.events: list[dict[str, Any]] = []
        #: False: no ``allocation.create`` event per new allocation (the caller records one
        #: event for the whole batch, e.g. a block of MACs reserved ahead).
        self.each_event = True
        self.now = datetime.now(UTC)
        self.written = False
        #: True: a requested MAC outside the request's effective pool is refused
        #: (:class:`OutsidePool`) instead of being allocated as an external MAC.
        self.in_range_only = False
        #: The rows' and events' DBAPI values, bound ahead of the write (:meth:`bind_ahead`).
        self.bound: tuple[list[Any] | None, list[Any]] | None = None
        #: MACs no automatic request takes: the later chunks of a chunked batch ask for them
        #: (a batch in one piece plans its requested MACs first instead).
        self.avoid: frozenset[int] = frozenset()

    def lock(self, pool_ids: set[int]) -> None:
        """Lock the pools not locked by this batch yet, in id order.

        ``allocate_macs`` locks every pool in one call, so two batches never deadlock. An
        :class:`AllocationPlan` locks per call, so two plans of different processes can meet
        in opposite orders: PostgreSQL then aborts one transaction (deadlock detection, after
        ``deadlock_timeout``), and the group commit runs that batch's reviews again one by one.
        """
        missing = [pool_id for pool_id in pool_ids if pool_id not in self.pools]
        if not missing:
            return
        for pool in lock_pools(self.session, missing, load_ranges=False).values():
            self.pools[pool.id] = _PoolState(
                pool,
                (pool.revision, pool.index_token),
                pool.cursor,
                pool.held_count,
                pool.low_warned,
            )

    def prepare(
        self,
        checked: Sequence[CheckedRequest],
        targets: Sequence[tuple[Scope, int]],
        *,
        unheld: bool = False,
    ) -> list[int]:
        """Read what the requests' steps need and lock their pools; the order to step them in.

        Only what this batch does not know yet is read: the existing owner identities (unless
        ``unheld``: the caller read its owners' allocations itself), where the requested MACs
        live and whether they are held. Requests naming a MAC come first, so an automatic MAC
        never takes one that a later request of the batch asks for.
        """
        requested = sorted({c.requested for c in checked if c.requested is not None})
        fresh = [mac for mac in requested if mac not in self.homes]
        self.homes.update(self._homes_of(fresh))
        # Pools first: a concurrent identical request holds the same locks, so the owner
        # identities read next include what it committed (an idempotent answer, not a
        # unique-constraint failure).
        self.lock(
            {eff for _, eff in targets} | {self.homes[m] for m in requested if m in self.homes}
        )
        keys: dict[int, set[tuple[str, str, str]]] = {}
        for c, (scope, _) in zip(checked, targets, strict=True):
            if (scope.id, c.owner_kind, c.owner_name, c.interface) not in self.priors:
                keys.setdefault(scope.id, set()).add((c.owner_kind, c.owner_name, c.interface))
        if keys and not unheld:
            self.priors.update(_existing(self.conn, keys))
        elif keys:  # no row holds these identities, but a pending hand-over may be from them
            wanted = (
                (scope_id, *identity)
                for scope_id, identities in keys.items()
                for identity in identities
            )
            self.priors.update(_handed_over(self.conn, wanted))
        self.held.update(self._read_held([mac for mac in fresh if mac not in self.held]))
        order = [i for i, c in enumerate(checked) if c.requested is not None]
        return order + [i for i, c in enumerate(checked) if c.requested is None]

    def _homes_of(self, macs: Sequence[int]) -> dict[int, int]:
        return homes_of(self.conn, macs)

    def _read_held(self, macs: Sequence[int]) -> set[int]:
        return _held(self.conn, macs)

    def _index(self, state: _PoolState) -> tuple[RangeSet, HeldIndex]:
        if state.index is None:
            state.index = pool_index(self.session, state.pool)
        return state.index

    def step(self, i: int, checked: CheckedRequest, scope: Scope, effective_id: int) -> None:
        key = (scope.id, checked.owner_kind, checked.owner_name, checked.interface)
        prior = self.priors.get(key)
        if prior is not None:
            if prior.handed_over and checked.requested != prior.mac:
                raise self._handed_over(checked, scope, prior)
            if checked.requested is not None and checked.requested != prior.mac:
                raise InterfaceInUse(
                    f"{checked.owner_kind} '{checked.owner_name}' interface "
                    f"'{checked.interface}' in scope {scope.path} already holds "
                    f"{format_mac_int(prior.mac)}; release it before asking for "
                    f"{format_mac_int(checked.requested)}.",
                    field="mac",
                    details={"holder": self._describe_prior(prior)},
                )
            return
        effective = self.pools[effective_id]
        home: _PoolState | None
        if checked.requested is None:
            value, in_range = self._take_next(effective), True
            home = effective
        else:
            value = checked.requested
            home_id = self.homes.get(value)
            home = self.pools[home_id] if home_id is not None else None
            in_range = home is not None and home.pool.id == effective_id
            if value in self.held:
                if self._hand_over(i, checked, scope, effective.pool, value, in_range):
                    self.priors[key] = _Prior(value, request=i, uid=checked.owner_uid)
                    return
                self._check_duplicate(effective.pool, value)
                self._check_in_range(effective, value, in_range)
                self.shared.add(value)
                home = None
            else:
                self._check_in_range(effective, value, in_range)
                self.held.add(value)
                self.new_held.append(value)
                self.fresh.append((effective_id, value))
                if home is not None:
                    self._index(home)[1].add(value)
                    home.held.append(value)
        row = allocation_row(
            checked,
            mac=value,
            pool_id=effective_id,
            scope_id=scope.id,
            in_range=in_range,
            actor=self.actor,
            now=self.now,
        )
        self.rows.append((i, row, scope, effective.pool))
        self.priors[key] = _Prior(value, request=i, uid=checked.owner_uid)
        if self.each_event:
            self.events.append(self._created_event(row, scope, effective.pool, checked))
        # Described only if a later request of the batch asks for the same MAC.
        self.batch_holders.setdefault(value, []).append(
            _BatchHolder(effective.pool, scope.path, checked)
        )
        if home is not None:
            self._warn(home)

    def _check_in_range(self, effective: _PoolState, value: int, in_range: bool) -> None:
        if in_range or not self.in_range_only:
            return
        pool = effective.pool
        ranges = self._index(effective)[0]
        raise OutsidePool(
            f"{format_mac_int(value)} is outside the ranges of pool '{pool.name}' "
            f"({', '.join(str(r) for r in ranges)}).",
            field="mac",
            details={
                "mac": format_mac_int(value),
                "pool": pool.name,
                "pool_id": pool.id,
                "ranges": [str(r) for r in ranges],
            },
        )

    def _handed_over(self, checked: CheckedRequest, scope: Scope, prior: _Prior) -> InterfaceInUse:
        """The error for another MAC asked for an identity whose MAC is in a pending hand-over.

        Only the MAC itself is a repeat (the source VM asserting its own MAC): an automatic MAC
        would give a VM of the same name a second MAC on an interface that may get its own back.
        """
        other = "another MAC" if checked.requested is None else format_mac_int(checked.requested)
        return InterfaceInUse(
            f"{checked.owner_kind} '{checked.owner_name}' interface '{checked.interface}' in "
            f"scope {scope.path} is being handed over with {format_mac_int(prior.mac)}: the MAC "
            f"goes back to it if the migration is reverted, so it cannot take {other} until "
            "the hand-over is final or reverted.",
            field="mac",
            details={"holder": self._describe_prior(prior), "handover": "pending"},
        )

    def _describe_prior(self, prior: _Prior) -> dict[str, Any]:
        """The holder of an owner identity, for an error: stored, or planned by this batch."""
        stored = None if prior.id is None else self.session.get(Allocation, prior.id)
        if stored is not None:
            return describe_holder(stored)
        return {"allocation_id": None, "batch_request": prior.request}

    def _take_next(self, state: _PoolState) -> int:
        ranges, index = self._index(state)
        value = next_free_mac(ranges, index, state.cursor)
        first = value
        while value is not None and value in self.avoid:  # requested by a later batch
            value = next_free_mac(ranges, index, value)
            if value == first:  # every free MAC is avoided
                value = None
        pool = state.pool
        if value is None:
            raise PoolExhausted(
                f"Pool '{pool.name}' has no free MAC address left: all {ranges.size} addresses "
                "of its ranges are held. Add a range to the pool or release MACs.",
                details={"pool": pool.name, "pool_id": pool.id, "size": ranges.size},
            )
        index.add(value)
        state.cursor = value
        state.held.append(value)
        self.held.add(value)
        self.new_held.append(value)
        return value

    def _stored_holders(self, value: int) -> list[Allocation]:
        if value not in self.db_holders:
            self.db_holders[value] = holders_of(self.session, value)
        return self.db_holders[value]

    def _holder_rows(self, value: int) -> list[StoredHolder]:
        """The stored holders of a MAC as rows (hand-overs move one of them)."""
        if value not in self.holder_rows:
            self.holder_rows[value] = stored_holders(self.conn, value)
        return self.holder_rows[value]

    def _hand_over(
        self,
        i: int,
        checked: CheckedRequest,
        scope: Scope,
        effective: Pool,
        value: int,
        in_range: bool,
    ) -> bool:
        """Plan the move of a held MAC to the requester, if the rules let it take the MAC.

        Two rules move a held allocation instead of refusing or sharing the MAC: a migrated
        VM takes its source VM's MAC (a hand-over), and an object that carries a MAC reserved
        ahead for it takes the reservation (``adopt_reserved``).
        """
        if checked.handover is None and not checked.adopt_reserved:
            return False
        rows = self._holder_rows(value)
        taken = {move[1].id for move in self.moves}
        mac = format_mac_int(value)
        holder = reserved_holder(rows, taken=taken) if checked.adopt_reserved else None
        if holder is not None:
            values = adoption_values(
                checked, scope_id=scope.id, pool_id=effective.id, in_range=in_range, now=self.now
            )
            event = creation_event(
                self.actor,
                mac=mac,
                allocation_id=holder.id,
                scope=scope.path,
                owner_kind=checked.owner_kind,
                owner_name=checked.owner_name,
                interface=checked.interface,
                pool=effective.name,
                state=checked.state,
                requested=True,
                in_range=in_range,
                now=self.now,
                reserved_by=holder.row["owner_name"],
            )
        else:
            source_uid = None if checked.handover is None else checked.handover.source_uid
            holder = handover_source(rows, source_uid, taken=taken)
            if holder is None:
                return False
            values = handover_values(
                holder,
                checked,
                scope_id=scope.id,
                pool_id=effective.id,
                in_range=in_range,
                now=self.now,
            )
            event = audit_row(
                self.actor,
                action="allocation.handover",
                target_type="mac",
                target_id=mac,
                target=mac,
                details=handover_event_details(holder, values, scope.path, effective.name),
                now=self.now,
            )
        self.moves.append((i, holder, values, scope, effective))
        # What the MAC counts for in the pools' statistics: its holders' pools, one replaced.
        pools = [effective.id if r.id == holder.id else r.row["pool_id"] for r in rows]
        home_id = self.homes.get(value)
        first = self.moved_shares.get(
            value, (shares_from([r.row["pool_id"] for r in rows], home_id),)
        )[0]
        self.moved_shares[value] = (first, shares_from(pools, home_id))
        for r in rows:  # later requests of the batch see the move
            if r.id == holder.id:
                r.row["pool_id"] = effective.id
        self.events.append(event)
        return True

    def _check_duplicate(self, effective: Pool, value: int) -> None:
        stored = self._stored_holders(value)
        ours = self.batch_holders.get(value, [])
        pools = {effective.id: effective, **{h.pool_id: h.pool for h in stored}}
        pools.update({h.pool.id: h.pool for h in ours})
        refusing = [p for p in pools.values() if not p.allow_duplicates]
        if refusing or not (stored or ours):
            names = ", ".join(f"'{p.name}'" for p in refusing)
            sentences = [holder_sentence(h) for h in stored] + [h.sentence for h in ours]
            raise MacInUse(
                f"MAC {format_mac_int(value)} is already in use by "
                + "; ".join(sentences)
                + (f". Duplicates are not allowed by pool {names}." if refusing else "."),
                field="mac",
                details={
                    "mac": format_mac_int(value),
                    "pool": effective.name,
                    "holders": [describe_holder(h) for h in stored] + [h.details for h in ours],
                    "refusing_pools": [p.name for p in refusing],
                },
            )

    def _warn(self, state: _PoolState) -> None:
        if state.size is None:
            state.size = self._index(state)[0].size
        size = state.size
        state.low_warned, warning = availability_warning(
            state.pool,
            size=size,
            threshold=self.threshold,
            held_count=state.held_count + len(state.held),
            low_warned=state.low_warned,
        )
        if warning is not None:
            state.warnings += 1
            self.events.append(audit_row(self.actor, now=self.now, **warning))

    def _created_event(
        self, row: dict[str, Any], scope: Scope, pool: Pool, checked: CheckedRequest
    ) -> dict[str, Any]:
        mac = format_mac_int(row["mac"])
        event = creation_event(
            self.actor,
            mac=mac,
            allocation_id=None,  # known once inserted
            scope=scope.path,
            owner_kind=checked.owner_kind,
            owner_name=checked.owner_name,
            interface=checked.interface,
            pool=pool.name,
            state=checked.state,
            requested=checked.requested is not None,
            in_range=row["in_range"],
            now=self.now,
        )
        row["_event"] = event
        return event

    def bind_ahead(self, dialect: Dialect) -> None:
        """Bind the planned rows' and events' values now, so that the write only runs them
        (a plan made before its write transaction: the binding costs the transaction nothing).
        Nothing may be planned after it."""
        rows = [row for _, row, _, _ in self.rows]
        self.bound = (bind_allocations(dialect, rows), bind_audit(dialect, self.events))

    def write(self, *, objects: bool = True, savepoint: bool = True) -> dict[int, Allocation]:
        """Write the planned rows; the new allocations by request index (none without
        ``objects``: callers that only need the MACs skip building the ORM objects).

        The savepoint keeps the transaction usable after a refused write; ``savepoint=False``
        is for callers that roll the whole transaction back then anyway.
        """
        conn = self.conn
        try:
            with self.session.begin_nested() if savepoint else nullcontext():
                if savepoint:  # the SAVEPOINT is emitted when the session's connection is asked
                    conn = self.session.connection()
                insert_held(conn, self.new_held)
                changed = [s for _, s in sorted(self.pools.items()) if s.held]
                for state in changed:
                    insert_changes(conn, advance_pool(state.pool, state.held))
                rows = [row for _, row, _, _ in self.rows]
                events = [row.pop("_event", None) for row in rows]
                before = shares_of(conn, self.shared, self.homes)
                moved = {i: move(conn, holder, values) for i, holder, values, _, _ in self.moves}
                bound_rows, bound_events = self.bound or (None, None)
                ids = insert_allocations(conn, rows, bound=bound_rows)
                after = shares_of(conn, self.shared, self.homes)
                apply_changes(
                    self.session,
                    [(before[mac], after[mac]) for mac in self.shared]
                    + [
                        (NONE, single_holder(pool_id, self.homes.get(mac)))
                        for pool_id, mac in self.fresh
                        if mac not in self.shared
                    ]
                    + [c for mac, c in self.moved_shares.items() if mac not in self.shared],
                )
                for row, event, row_id in zip(rows, events, ids, strict=True):
                    row["id"] = row_id
                    if event is not None:
                        event["details"]["allocation_id"] = row_id
                insert_audit(conn, self.events, bound=bound_events)
                for state in changed:
                    set_committed_value(state.pool, "low_warned", state.low_warned)
                    write_pool(conn, state.pool, cursor=state.cursor, now=self.now)
        except IntegrityError as exc:  # a concurrent transaction took a requested MAC
            raise MacInUse(
                "A MAC requested in this batch was just taken by another request; try again.",
                field="mac",
            ) from exc
        self.written = True
        for state in changed:
            advance_index(self.session, state.pool, base=state.base, macs=state.held)
        if not objects:
            return {}
        if len(self.rows) > FEW_ROWS:
            # An import's thousands of rows: their objects stay out of the session (adding
            # them cost a third of the write); every column and the scope and pool are set.
            created = {
                i: written_allocation(row, scope=scope, pool=pool)
                for i, row, scope, pool in self.rows
            }
        else:
            created = {
                i: persistent_allocation(self.session, row, scope=scope, pool=pool)
                for i, row, scope, pool in self.rows
            }
        for i, _, _, scope, pool in self.moves:
            created[i] = moved_allocation(self.session, moved[i], scope=scope, pool=pool)
        return created

    def undo(self) -> None:
        """Forget in-memory changes of a batch that was refused or failed (before the rollback).

        Unwritten, the MACs it planned leave the indexes again; written, the index advances are
        reverted by the session's rollback (:func:`~manager.services.index_cache.advance_index`).
        """
        for state in self.pools.values():
            if state.index is not None and not self.written:
                for mac in state.held:
                    state.index[1].discard(mac)
            self.session.expire(state.pool)


def allocate_macs(
    session: Session,
    actor: Actor,
    requests: Sequence[AllocationRequest],
    *,
    now: datetime | None = None,
    each_event: bool = True,
    results: bool = True,
    unheld: bool = False,
) -> list[AllocationResult]:
    """Allocate for every request at once; results in request order (see the module docstring).

    ``each_event=False`` leaves out the ``allocation.create`` event of each new allocation:
    the caller records one for the batch. ``results=False`` returns no results (an empty
    list): nothing builds the allocations' objects nor reads back the repeats. ``unheld``: the
    caller read its owners' allocations in this transaction or knows none holds a requested
    identity (saves the query; should one exist after all, the unique constraint refuses the
    insert and the batch raises :class:`MacInUse`, writing nothing).

    Same rules as ``allocate_mac``: idempotent per owner identity (a repeat, also within the
    batch, returns the existing allocation with ``created=False``), requested vs automatic,
    duplicates only when every pool involved allows them, pending with ``ttl_seconds``, one
    audit event per allocation plus pool warnings. A refusal raises the service's error, its
    message prefixed with the request it concerns; nothing of the batch is written then.
    """
    if not requests:
        return []
    return _allocate(session, actor, requests, now, each_event, results, unheld)[1]


def allocate_rows(
    session: Session,
    actor: Actor,
    requests: Sequence[AllocationRequest],
    *,
    now: datetime | None = None,
    each_event: bool = True,
    unheld: bool = False,
) -> list[tuple[int, int]]:
    """``allocate_macs`` for callers that need only the (id, MAC) of each new allocation (a
    reserve's block): no ORM objects are built; repeats of stored allocations are left out."""
    if not requests:
        return []
    batch, _ = _allocate(session, actor, requests, now, each_event, False, unheld)
    return [(row["id"], row["mac"]) for _, row, _, _ in batch.rows]


def _allocate(
    session: Session,
    actor: Actor,
    requests: Sequence[AllocationRequest],
    now: datetime | None,
    each_event: bool,
    objects: bool,
    unheld: bool,
) -> tuple[_Batch, list[AllocationResult]]:
    """Check, plan and write the requests as one batch (undone in memory if anything fails)."""
    batch, checked, targets = _prepared_batch(session, actor, requests, now, each_event)
    try:
        results = _run(session, batch, requests, checked, targets, objects=objects, unheld=unheld)
    except BaseException:
        batch.undo()
        raise
    return batch, results


def _prepared_batch(
    session: Session,
    actor: Actor,
    requests: Sequence[AllocationRequest],
    now: datetime | None,
    each_event: bool,
) -> tuple[_Batch, list[CheckedRequest], list[tuple[Scope, int]]]:
    """The requests checked, their scopes and effective pools resolved, and a fresh batch."""
    expiry_base = now or datetime.now(UTC)
    checked: list[CheckedRequest] = []
    for i, request in enumerate(requests):
        try:
            checked.append(check_request(request, now=expiry_base))
        except MacPoolError as exc:
            raise _named(exc, i, None, request) from exc
    keys: dict[Any, int] = {}
    refs: list[Any] = []
    for request in requests:
        ref = request.scope
        key = ("scope", ref.id) if isinstance(ref, Scope) else (type(ref).__name__, ref)
        if key not in keys:
            keys[key] = len(refs)
            refs.append(ref)
    resolved = scopes_and_pool_ids(session, refs)
    targets: list[tuple[Scope, int]] = []
    for i, request in enumerate(requests):
        ref = request.scope
        key = ("scope", ref.id) if isinstance(ref, Scope) else (type(ref).__name__, ref)
        target = resolved[keys[key]]
        if isinstance(target, MacPoolError):
            raise _named(target, i, checked[i], request) from target
        targets.append(target)
    batch = _Batch(session, actor, connection(session))
    batch.each_event = each_event
    return batch, checked, targets


def allocate_one(
    session: Session,
    actor: Actor,
    request: AllocationRequest,
    *,
    now: datetime | None = None,
    target: tuple[Scope, int] | None = None,
) -> AllocationResult:
    """One request as a batch of one; errors are the service's own, not named.

    ``target``: the request's scope and effective pool id, when the caller resolved them in
    this same transaction.
    """
    checked = check_request(request, now=now or datetime.now(UTC))
    if target is None:
        target = scope_and_pool_id(session, request.scope)
    batch = _Batch(session, actor, connection(session))
    try:
        return _run(session, batch, None, [checked], [target])[0]
    except BaseException:
        batch.undo()
        raise


def _run(
    session: Session,
    batch: _Batch,
    requests: Sequence[AllocationRequest] | None,
    checked: Sequence[CheckedRequest],
    targets: Sequence[tuple[Scope, int]],
    *,
    objects: bool = True,
    unheld: bool = False,
) -> list[AllocationResult]:
    """Plan and write the batch; errors name their request when ``requests`` are given.

    ``objects=False``: write only (no results; the written rows stay in ``batch.rows``).
    ``unheld``: no identity lookup (see :func:`allocate_macs`)."""
    repeats: dict[int, _Prior] = {}
    for i in batch.prepare(checked, targets, unheld=unheld):
        scope, effective_id = targets[i]
        c = checked[i]
        prior = batch.priors.get((scope.id, c.owner_kind, c.owner_name, c.interface))
        try:
            batch.step(i, c, scope, effective_id)
        except MacPoolError as exc:
            if requests is None:
                raise
            raise _named(exc, i, c, requests[i]) from exc
        if prior is not None:
            repeats[i] = prior
    # A batch of one needs no savepoint: its caller's transaction ends with the request.
    # (with ``unheld``, an identity taken after all fails the insert: the savepoint keeps the
    # caller's transaction usable).
    created = batch.write(savepoint=len(checked) > 1 or unheld, objects=objects)
    if not objects:
        return []
    stored_ids = [p.id for p in repeats.values() if p.id is not None]
    stored = {
        a.id: a
        for ids in _chunks(stored_ids)
        for a in session.scalars(select(Allocation).where(Allocation.id.in_(ids)))
    }
    answers = []
    for i in range(len(checked)):
        if i in created:
            answers.append(AllocationResult(created[i], created=True))
            continue
        prior = repeats[i]
        holder = stored[prior.id] if prior.id is not None else created[prior.request or 0]
        answers.append(AllocationResult(holder, created=False))
    return answers


class AllocationPlan:
    """Allocations of several callers in one transaction, planned at once and written together.

    Group commit needs it: :meth:`allocate` answers with the MACs immediately, by the rules of
    :func:`allocate_macs` (allocations planned earlier count as held MACs and as existing owner
    identities), but the rows are written by :meth:`write`, all in a few executemany inserts
    and one update per pool. Until then the pools stay locked and the planned MACs are only in
    this process's indexes, so the caller must write the plan before anything else in the
    transaction reads or changes allocations, and before committing. After an error (of
    :meth:`allocate` or of :meth:`write`) it calls :meth:`undo` and rolls the transaction back.
    Errors are the service's own, unnamed (no request index).
    """

    def __init__(self, session: Session, actor: Actor) -> None:
        self.session = session
        self.actor = actor
        self._batch: _Batch | None = None
        self._owners: set[tuple[int, str, str]] = set()

    def __len__(self) -> int:
        """How many allocations are planned and not written yet."""
        return 0 if self._batch is None else len(self._batch.rows)

    def holds(self, scope_id: int, owner_kind: str, owner_name: str) -> bool:
        """Whether an unwritten allocation of this owner is planned."""
        return (scope_id, owner_kind, owner_name) in self._owners

    def allocate(
        self,
        requests: Sequence[AllocationRequest],
        targets: Sequence[tuple[Scope, int]],
        *,
        now: datetime | None = None,
        unheld: bool = False,
    ) -> list[int]:
        """Plan the requests (each with its scope and effective pool id); their MACs.

        ``unheld``: the caller read its owners' allocations in this transaction and none holds
        a requested identity (saves the query; identities planned before still count).
        """
        moment = now or datetime.now(UTC)
        checked = [check_request(request, now=moment) for request in requests]
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self.session, self.actor, connection(self.session))
        for i in batch.prepare(checked, targets, unheld=unheld):
            scope, effective_id = targets[i]
            batch.step(len(batch.rows), checked[i], scope, effective_id)
        macs = []
        for c, (scope, _) in zip(checked, targets, strict=True):
            macs.append(batch.priors[(scope.id, c.owner_kind, c.owner_name, c.interface)].mac)
            self._owners.add((scope.id, c.owner_kind, c.owner_name))
        return macs

    def write(self) -> None:
        """Write every planned allocation (a new plan starts empty)."""
        batch, self._batch = self._batch, None
        self._owners.clear()
        if batch is None or not batch.rows:
            return
        try:
            batch.write(objects=False, savepoint=False)  # on error the caller rolls back
        except BaseException:
            batch.undo()
            raise

    def undo(self) -> None:
        """Forget what is planned; call it before rolling the transaction back."""
        batch, self._batch = self._batch, None
        self._owners.clear()
        if batch is not None:
            batch.undo()


__all__ = ["CHUNK", "AllocationPlan", "allocate_macs", "allocate_one", "homes_of"]
