"""Forecasts: the allocation kernel's plan of a batch, made before the write lock, written later.

A large batch (an oVirt import of 10^4 VMs) spends seconds checking its requests. Done inside
its write transaction, that is seconds during which nobody else can write to a SQLite database
(and, on PostgreSQL, allocate from the batch's pools). A :class:`Forecast` runs the allocation
kernel (:class:`~manager.services.bulk_allocations._Batch`: the same rule functions for
requested MACs, duplicates, pool choice, cursor, exhaustion and idempotency) in a *read*
transaction instead: pools are read without row locks, the pools' indexes are private copies
(the process-wide ones are only changed under a pool lock), and nothing is written. Its plan
tells, per request, what the kernel would do: the MAC and whether it is new, or the refusal.

:meth:`Forecast.write` then writes that plan in the caller's short write transaction, exactly
as planned, after re-reading what the plan depended on:

- the topology generation (scopes, pools, ranges, duplicates rules; see
  :mod:`manager.db.generation`);
- every pool the plan takes MACs from: the same ``(revision, index_token)``, so the free MACs it
  picked, its counters and warnings are still right; or, when others allocated from it
  meanwhile, none of the plan's MACs among theirs and no availability warning due (the plan is
  then written on top of the pool as it is now);
- the owner identities of the requests: the same stored allocations, with the same MACs;
- the requested MACs: the same ones held, and the same holders where the plan looked at them.

Anything changed raises :class:`StalePlan` and writes nothing; the caller plans again. The
database constraints (a held MAC's primary key, the owner identity's unique key, a pool change's
revision) stay the last guard: a violation during the write is a :class:`StalePlan` too.

A plan may assume pools that do not exist yet (:meth:`Forecast.assume`: an import that brings
its own pools plans them with its NICs); its write then creates them first, in the same short
transaction, and the rows refer to the created pools and scopes.

``Forecast(..., locked=True)`` plans inside the caller's write transaction instead, with the
kernel's locks and shared indexes (the plan cannot go stale): the fallback when planning ahead
keeps failing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.collector import collector_paused
from manager.core.errors import Conflict, MacInUse, MacPoolError
from manager.core.index import HeldIndex
from manager.core.ranges import RangeSet
from manager.db import Allocation, Pool, Scope
from manager.db.generation import current
from manager.services.allocation_rows import (
    AllocationRequest,
    CheckedRequest,
    check_request,
    connection,
)
from manager.services.bulk_allocations import (
    _Batch,
    _chunks,
    _existing,
    _held,
    _IdentityKey,
    _PoolState,
    _Prior,
)
from manager.services.common import lock_pools
from manager.services.handovers import StoredHolder, stored_holders
from manager.services.index_cache import private_index
from manager.services.scopes import scopes_and_pool_ids

#: Steps between two progress reports of :meth:`Forecast.plan`.
PROGRESS_EVERY = 1000


class StalePlan(Conflict):
    """What a forecast depended on changed before it was written; plan again."""

    reason = "stale_plan"


@dataclass(frozen=True, slots=True)
class Prior:
    """An owner identity that held a MAC when a request was planned."""

    mac: int
    #: The stored allocation, or None when a request of this batch holds it.
    allocation_id: int | None
    owner_uid: str | None
    #: The index of the request of this batch that holds it (when ``allocation_id`` is None).
    request: int | None


@dataclass(frozen=True, slots=True)
class Planned:
    """What the kernel does with one request of a forecast."""

    #: The MAC the request ends up with (None when refused).
    mac: int | None = None
    #: A new allocation is planned (False: refused, or the identity held a MAC already).
    created: bool = False
    #: The identity's holder when the request was stepped (an idempotent repeat, or the
    #: allocation that made the kernel refuse another MAC for it).
    prior: Prior | None = None
    #: The kernel's refusal of the request as made (None: accepted).
    error: MacPoolError | None = None
    #: The request named a MAC that was refused, and was planned again without one.
    retried: bool = False
    #: The refusal of the automatic retry, if it was refused too.
    retry_error: MacPoolError | None = None


#: Whether a request refused with this error is planned again without its requested MAC.
Retry = Callable[[int, MacPoolError], bool]
Progress = Callable[[int, int], None]
#: Creates the pools and scopes a plan assumed; (pools, scope ids) by made-up id.
Topology = Callable[[], tuple[dict[int, Pool], dict[int, int]]]


class _ForecastBatch(_Batch):
    """The kernel's batch reading without locks and stepping on private pool indexes."""

    def __init__(self, session: Session, actor: Actor, conn: Connection, *, locked: bool) -> None:
        super().__init__(session, actor, conn)
        self.locked = locked
        #: What the plan saw, for :meth:`Forecast.write` to compare: the holders of requested
        #: MACs as (id, pool id), and as whole rows where a hand-over may move one.
        self.seen_holders: dict[int, list[tuple[int, int]]] = {}
        self.seen_rows: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        #: Ranges of pools the plan assumes (not created yet): (start, end, made-up pool id).
        self.planned_ranges: list[tuple[int, int, int]] = []

    def lock(self, pool_ids: set[int]) -> None:
        if self.locked:
            super().lock(pool_ids)
            return
        missing = sorted(pool_id for pool_id in pool_ids if pool_id not in self.pools)
        if not missing:
            return
        for pool in self.session.scalars(select(Pool).where(Pool.id.in_(missing))):
            self.pools[pool.id] = _PoolState(
                pool,
                (pool.revision, pool.index_token),
                pool.cursor,
                pool.held_count,
                pool.low_warned,
            )

    def _read_held(self, macs: Sequence[int]) -> set[int]:
        return _held(self.conn, macs, lock=self.locked)

    def _homes_of(self, macs: Sequence[int]) -> dict[int, int]:
        found = super()._homes_of(macs)
        for mac in macs:
            for start, end, pool_id in self.planned_ranges:
                if start <= mac <= end:
                    found[mac] = pool_id
        return found

    def _index(self, state: _PoolState) -> tuple[RangeSet, HeldIndex]:
        if self.locked:
            return super()._index(state)
        if state.index is None:
            state.index = private_index(self.session, state.pool)
        return state.index

    def _stored_holders(self, value: int) -> list[Allocation]:
        holders = super()._stored_holders(value)
        self.seen_holders.setdefault(value, [(a.id, a.pool_id) for a in holders])
        return holders

    def _holder_rows(self, value: int) -> list[StoredHolder]:
        rows = super()._holder_rows(value)
        self.seen_rows.setdefault(value, [(r.id, dict(r.row)) for r in rows])
        return rows


def _holders_now(conn: Connection, macs: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
    table = Allocation.__table__
    found: dict[int, list[tuple[int, int]]] = {mac: [] for mac in macs}
    for chunk in _chunks(sorted(macs)):
        rows = conn.execute(
            select(table.c.mac, table.c.id, table.c.pool_id)
            .where(table.c.mac.in_(chunk))
            .order_by(table.c.id)
        ).all()
        for mac, row_id, pool_id in rows:
            found[mac].append((row_id, pool_id))
    return found


class Forecast:
    """One batch of requests planned by the kernel, written later (see the module docstring).

    ``in_range_only``: a requested MAC outside the request's effective pool is refused with
    :class:`~manager.core.errors.OutsidePool` instead of being allocated as an external MAC
    (the oVirt engine's rule for imported NICs). ``avoid``: MACs no automatic request takes
    (requested by chunks of the same import written later).
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        *,
        locked: bool = False,
        in_range_only: bool = False,
        now: datetime | None = None,
        avoid: Collection[int] = (),
    ) -> None:
        self.actor = actor
        self.locked = locked
        self.now = now or datetime.now(UTC)
        conn = connection(session)
        self.generation = current(conn)
        self._batch = _ForecastBatch(session, actor, conn, locked=locked)
        self._batch.in_range_only = in_range_only
        self._batch.avoid = frozenset(avoid)
        self._keys: dict[int, set[tuple[str, str, str]]] = {}
        self._stored: dict[_IdentityKey, tuple[int | None, int]] = {}
        self._requested: list[int] = []
        self._held_before: set[int] = set()
        self.planned: list[Planned] = []
        self._done = False

    def assume(self, pools: Sequence[Pool]) -> None:
        """Plan with pools that do not exist yet (transient, made-up negative ids, their ranges
        set, from :func:`~manager.services.pools.planned_pool`), as if created empty-handed
        now; :meth:`write` creates them first (its ``topology``)."""
        batch = self._batch
        for pool in pools:
            if pool.id is None or pool.id >= 0:
                raise ValueError("an assumed pool has a made-up negative id")
            batch.pools[pool.id] = _PoolState(pool, (0, 0), None, pool.held_count, False)
            batch.planned_ranges.extend((r.start_mac, r.end_mac, pool.id) for r in pool.ranges)

    def __len__(self) -> int:
        """How many new allocations the plan writes."""
        return len(self._batch.rows)

    def plan(
        self,
        requests: Sequence[AllocationRequest],
        *,
        retry: Retry | None = None,
        progress: Progress | None = None,
        targets: Sequence[tuple[Scope, int]] | None = None,
    ) -> list[Planned]:
        """Plan every request; per request (in order) what the kernel does with it.

        A refused request is recorded and skipped (nothing is written for it); the others are
        planned as :func:`~manager.services.bulk_allocations.allocate_macs` plans them: first
        every request naming a MAC, then every automatic one, each in request order. A refused
        request naming a MAC for which ``retry`` answers True is planned again without it, with
        the automatic ones (in request order). ``targets``: each request's scope and effective
        pool id, when the caller resolved them in this transaction (or planned them).
        """
        if self.planned:
            raise RuntimeError("a forecast plans one batch")
        batch = self._batch
        planned: list[Planned] = [Planned() for _ in requests]
        if targets is None:
            refs = _scope_refs(requests)
            found = scopes_and_pool_ids(batch.session, refs.unique)
            resolved = [found[ref] for ref in refs.of_request]
        else:
            resolved = list(targets)
        valid: dict[int, tuple[CheckedRequest, tuple[Scope, int]]] = {}
        for i, request in enumerate(requests):
            try:
                checked = check_request(request, now=self.now)
            except MacPoolError as exc:
                planned[i] = Planned(error=exc)
                continue
            target = resolved[i]
            if isinstance(target, MacPoolError):
                planned[i] = Planned(error=target)
                continue
            valid[i] = (checked, target)
        indexes = list(valid)
        steps = [valid[i] for i in indexes]
        ordered = batch.prepare([c for c, _ in steps], [t for _, t in steps])
        self._remember_reads(steps)
        automatic = {indexes[k] for k in ordered if steps[k][0].requested is None}
        done, total = 0, len(steps)

        def stepped() -> None:
            nonlocal done
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(min(done, total), total)

        for i in (indexes[k] for k in ordered):
            if i in automatic:
                continue
            checked, target = valid[i]
            planned[i] = self._step(i, checked, target)
            error = planned[i].error
            if error is not None and retry is not None and retry(i, error):
                automatic.add(i)
                valid[i] = (replace(checked, requested=None), target)
                planned[i] = replace(planned[i], retried=True)
            stepped()
        for i in sorted(automatic):
            outcome = self._step(i, *valid[i])
            if planned[i].retried:
                outcome = replace(
                    planned[i],
                    mac=outcome.mac,
                    created=outcome.created,
                    prior=outcome.prior,
                    retry_error=outcome.error,
                )
            planned[i] = outcome
            stepped()
        if not self.locked:  # the write transaction then only runs the statements
            batch.bind_ahead(batch.conn.dialect)
        if progress is not None:
            progress(total, total)
        self.planned = planned
        return planned

    def _step(self, i: int, checked: CheckedRequest, target: tuple[Scope, int]) -> Planned:
        batch = self._batch
        scope, effective_id = target
        key = (scope.id, checked.owner_kind, checked.owner_name, checked.interface)
        before = batch.priors.get(key)
        prior = None if before is None else _public(before)
        try:
            batch.step(i, checked, scope, effective_id)
        except MacPoolError as exc:
            return Planned(prior=prior, error=exc)
        if before is not None:
            return Planned(mac=before.mac, prior=prior)
        return Planned(mac=batch.priors[key].mac, created=True)

    def _remember_reads(self, steps: Sequence[tuple[CheckedRequest, tuple[Scope, int]]]) -> None:
        """What ``prepare`` read, for the write to compare with the database then."""
        batch = self._batch
        for c, (scope, _) in steps:
            self._keys.setdefault(scope.id, set()).add((c.owner_kind, c.owner_name, c.interface))
        self._stored = {key: (p.id, p.mac) for key, p in batch.priors.items() if p.id is not None}
        self._requested = sorted({c.requested for c, _ in steps if c.requested is not None})
        self._held_before = {mac for mac in self._requested if mac in batch.held}

    def write(self, session: Session, *, topology: Topology | None = None) -> None:
        """Write the plan in ``session``'s transaction (see the module docstring).

        ``topology``: called once the plan is verified, creates the pools and scopes the plan
        assumed and returns their real ids by made-up id (pools, scopes); the plan's rows
        then refer to those.

        Raises :class:`StalePlan` (nothing written) when something the plan depended on
        changed since; the caller rolls back and plans again.
        """
        if self._done:
            raise RuntimeError("a forecast is written once")
        with collector_paused():
            self._write(session, topology)
        self._done = True

    def _write(self, session: Session, topology: Topology | None) -> None:
        batch = self._batch
        conn = connection(session)
        if not self.locked:
            # Pools first, as the kernel locks them: a concurrent identical request waits.
            stored = [pool_id for pool_id in batch.pools if pool_id > 0]
            fresh = lock_pools(session, stored, load_ranges=False)
            self._verify(conn, fresh)
            for pool_id in stored:
                batch.pools[pool_id].pool = fresh[pool_id]
            batch.session, batch.conn = session, conn
        if topology is not None:
            pools, scopes = topology()
            self._adopt(session, pools, scopes)
        conn = connection(session)
        try:
            batch.write(objects=False, savepoint=True)
        except MacInUse as exc:  # a constraint caught a change the checks could not see
            if self.locked or exc.__cause__ is None:  # planned in the lock: the kernel's error
                raise
            raise StalePlan(
                "A MAC or owner identity of the plan was just taken by another request."
            ) from exc

    def _adopt(self, session: Session, pools: dict[int, Pool], scopes: dict[int, int]) -> None:
        """Point the plan at the pools and scopes just created for it."""
        batch = self._batch
        ids = {planned: pool.id for planned, pool in pools.items()}
        for planned, pool in pools.items():
            state = batch.pools.pop(planned)
            if pool.held_count != state.held_count:
                raise StalePlan(f"MACs in the ranges of pool '{pool.name}' changed meanwhile.")
            state.pool, state.base = pool, (pool.revision, pool.index_token)
            batch.pools[pool.id] = state
        for _, row, _, _ in batch.rows:
            row["pool_id"] = ids.get(row["pool_id"], row["pool_id"])
            row["scope_id"] = scopes.get(row["scope_id"], row["scope_id"])
        batch.homes = {mac: ids.get(pool_id, pool_id) for mac, pool_id in batch.homes.items()}
        batch.fresh = [(ids.get(pool_id, pool_id), mac) for pool_id, mac in batch.fresh]
        named = {str(planned): str(real) for planned, real in ids.items()}
        for event in batch.events:
            if event["target_type"] == "pool" and event["target_id"] in named:
                event["target_id"] = named[event["target_id"]]
        batch.bound = None  # bound with the made-up ids: bound again by the write

    def _verify(self, conn: Connection, fresh: dict[int, Pool]) -> None:
        """Raise :class:`StalePlan` unless what the plan read is what ``conn`` reads now."""
        batch = self._batch
        if current(conn) != self.generation:
            raise StalePlan("Scopes, pools or ranges changed while the batch was planned.")
        for pool_id, state in batch.pools.items():
            if pool_id < 0:
                continue  # created by the write
            now = fresh.get(pool_id)
            if now is None:
                raise StalePlan(
                    f"Pool '{state.pool.name}' was deleted while the batch was planned."
                )
            if state.held and (now.revision, now.index_token) != state.base:
                self._rebase(conn, state, now)
        found = _existing(conn, self._keys) if self._keys else {}
        if {key: (p.id, p.mac) for key, p in found.items()} != self._stored:
            raise StalePlan("Allocations of the batch's owners changed while it was planned.")
        if _held(conn, self._requested) != self._held_before:
            raise StalePlan("A requested MAC was taken or released while the batch was planned.")
        seen = batch.seen_holders
        if seen and _holders_now(conn, list(seen)) != seen:
            raise StalePlan("The holders of a requested MAC changed while it was planned.")
        for mac, rows in batch.seen_rows.items():
            if [(r.id, r.row) for r in stored_holders(conn, mac)] != rows:
                raise StalePlan("The holders of a requested MAC changed while it was planned.")

    def _rebase(self, conn: Connection, state: _PoolState, now: Pool) -> None:
        """Keep the plan of a pool that others allocated from meanwhile, if it still holds.

        It does when none of the MACs it takes from the pool was taken since, and no
        availability warning is due, before or after: the batch's MACs are then written on top
        of the pool as it is now (its revision, counters and index moved on from there).
        """
        batch = self._batch
        size = state.size if state.size is not None else batch._index(state)[0].size
        available = size - now.held_count - len(state.held)
        if (
            state.warnings
            or now.low_warned != state.pool.low_warned
            or available <= batch.threshold
            or _held(conn, state.held)
        ):
            raise StalePlan(f"Pool '{state.pool.name}' changed while the batch was planned.")
        state.base = (now.revision, now.index_token)

    def discard(self) -> None:
        """Forget a plan that will not be written (a dry run, a refusal, a stale plan)."""
        if not self._done:
            if self.locked:  # the shared indexes hold the planned MACs: take them out again
                self._batch.undo()
            self._done = True


def read_snapshot(session: Session) -> None:
    """Make the session's transaction read one snapshot throughout (call it first, before
    any query): what a plan made ahead of its write must read. SQLite's transactions do;
    PostgreSQL's need REPEATABLE READ (READ COMMITTED sees each commit as it happens)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _public(prior: _Prior) -> Prior:
    return Prior(prior.mac, prior.id, prior.uid, prior.request)


@dataclass(slots=True)
class _Refs:
    unique: list[Any]
    of_request: list[int]


def _scope_refs(requests: Sequence[AllocationRequest]) -> _Refs:
    """Each distinct scope reference once (resolved together), and each request's."""
    keys: dict[Any, int] = {}
    refs = _Refs([], [])
    for request in requests:
        ref = request.scope
        key = ("scope", ref.id) if isinstance(ref, Scope) else (type(ref).__name__, ref)
        if key not in keys:
            keys[key] = len(refs.unique)
            refs.unique.append(ref)
        refs.of_request.append(keys[key])
    return refs


__all__ = ["Forecast", "Planned", "Prior", "StalePlan", "read_snapshot"]
