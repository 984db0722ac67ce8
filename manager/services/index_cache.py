"""A per-process cache of each pool's allocator index, kept in step with the database.

Finding the next free MAC must not cost a scan of the held MACs, so each process keeps a
:class:`~manager.core.index.HeldIndex` per pool. The database stays the single source of truth:

- every change to the held MACs inside a pool's ranges bumps ``pools.revision``, stores a
  random ``index_token`` and appends a ``pool_changes`` row (done under the pool's row lock);
- before using its index, a process compares its (revision, token) with the pool row. Equal:
  the index is current. Behind: it replays the ``pool_changes`` rows it missed, provided the
  row at its own revision still carries its token (so a rolled-back change that reused a
  revision number is detected). Anything else (pruned history, a range edit): full reload.

The primary key on ``held_macs.mac`` remains the final guard against handing out a MAC twice.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Table, bindparam, delete, insert, select
from sqlalchemy.orm import Session

from manager.core.index import HeldIndex
from manager.core.ranges import MacRange, RangeSet
from manager.db import HeldMac, Pool, PoolChange, UnitOfWork
from manager.db.prepared import Prepared

#: How many change rows per pool are kept for processes that fell behind.
CHANGE_HISTORY = 50_000


@dataclass(slots=True)
class _Entry:
    revision: int
    token: int
    ranges: RangeSet
    index: HeldIndex


_lock = threading.Lock()
_caches: weakref.WeakKeyDictionary[Engine, dict[int, _Entry]] = weakref.WeakKeyDictionary()


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _cache_for(session: Session) -> dict[int, _Entry]:
    engine = _engine(session)
    with _lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = {}
        return cache


def pool_ranges(pool: Pool) -> RangeSet:
    return RangeSet(MacRange(r.start_mac, r.end_mac) for r in pool.ranges)


def _load(session: Session, pool: Pool) -> _Entry:
    ranges = pool_ranges(pool)
    macs: list[int] = []
    for rng in ranges:
        macs.extend(
            session.scalars(
                select(HeldMac.mac)
                .where(HeldMac.mac >= rng.start, HeldMac.mac <= rng.end)
                .order_by(HeldMac.mac)
            )
        )
    return _Entry(pool.revision, pool.index_token, ranges, HeldIndex.from_sorted(macs))


_changes: Table = PoolChange.__table__  # type: ignore[assignment]
#: The change rows a process that fell behind replays: each process does after every write of
#: another (several webhook workers take turns), so it is prepared.
_CHANGES_SINCE = Prepared(
    select(_changes.c.revision, _changes.c.mac, _changes.c.held, _changes.c.token)
    .where(
        _changes.c.pool_id == bindparam("pool_id"),
        _changes.c.revision >= bindparam("revision"),
    )
    .order_by(_changes.c.revision)
)


def _replay(session: Session, pool: Pool, entry: _Entry) -> bool:
    session.flush()
    rows = _CHANGES_SINCE.rows(
        session.connection(), {"pool_id": pool.id, "revision": entry.revision}
    )
    if len(rows) != pool.revision - entry.revision + 1:
        return False
    first_revision, _, _, first_token = rows[0]
    if first_revision != entry.revision or first_token != entry.token:
        return False
    for _, mac, held, _ in rows[1:]:
        if mac is None:
            return False
        if held:
            entry.index.add(mac)
        else:
            entry.index.discard(mac)
    entry.revision, entry.token = pool.revision, pool.index_token
    return True


def pool_index(session: Session, pool: Pool) -> tuple[RangeSet, HeldIndex]:
    """The pool's ranges and an index of the held MACs inside them, current for this session.

    Call it while holding the pool's row lock, so that nobody changes the pool meanwhile.
    """
    cache = _cache_for(session)
    entry = cache.get(pool.id)
    if entry is not None and (entry.revision, entry.token) == (pool.revision, pool.index_token):
        return entry.ranges, entry.index
    if entry is None or entry.revision >= pool.revision or not _replay(session, pool, entry):
        entry = _load(session, pool)
        cache[pool.id] = entry
    return entry.ranges, entry.index


def private_index(session: Session, pool: Pool) -> tuple[RangeSet, HeldIndex]:
    """The pool's ranges and a new index of the held MACs inside them, as the session's
    transaction sees them, shared with nobody: for planning without the pool's row lock (the
    shared index may only change under it)."""
    entry = _load(session, pool)
    return entry.ranges, entry.index


@dataclass(slots=True)
class _Advance:
    """One :func:`advance_index` of an open transaction, and how a rollback reverts it."""

    entry: _Entry
    #: (revision, token) before and after the advance.
    base: tuple[int, int]
    after: tuple[int, int]
    #: MACs the transaction newly held (free before it: the caller held the pool lock).
    macs: list[int]

    def undo(self) -> None:
        """Move the entry back, unless it moved on since (then its next user reloads it)."""
        entry = self.entry
        if (entry.revision, entry.token) != self.after:
            return
        for mac in self.macs:
            entry.index.discard(mac)
        entry.revision, entry.token = self.base


def advance_index(
    session: Session, pool: Pool, *, base: tuple[int, int], macs: Sequence[int]
) -> None:
    """Move this process's index of ``pool`` over MACs just held, saving the next replay query.

    ``base`` is the pool's (revision, token) before the change; the index moves only if it was
    current at exactly that point. ``macs`` were free before this transaction (a caller that
    planned them may have added them to the index already). Call it under the pool's row lock
    (as the change itself is made), so no other thread reads the entry meanwhile. If the
    transaction rolls back instead, the pool row keeps the old (revision, token): the session's
    rollback moves the entry back first (see :meth:`~manager.db.UnitOfWork.before_rollback`),
    so a webhook dry run or refusal does not make the next user reload the pool (a second or so
    at 10^6 held MACs).
    """
    entry = _cache_for(session).get(pool.id)
    if entry is None or (entry.revision, entry.token) != base:
        return
    for mac in macs:
        entry.index.add(mac)
    entry.revision, entry.token = pool.revision, pool.index_token
    if macs and isinstance(session, UnitOfWork):
        advance = _Advance(entry, base, (entry.revision, entry.token), list(macs))
        session.before_rollback(advance.undo)


def invalidate(session: Session, pool_id: int) -> None:
    """Drop this process's index of one pool (after an in-memory change that did not happen)."""
    _cache_for(session).pop(pool_id, None)


def record_change(session: Session, pool: Pool, *, mac: int | None, held: bool) -> None:
    """Note a change to the held MACs inside ``pool``'s ranges (``mac=None``: reload)."""
    pool.revision += 1
    pool.index_token = secrets.randbits(62)
    if mac is not None:
        pool.held_count += 1 if held else -1
    # A Core insert: the change row is write-only for this transaction (no ORM bookkeeping).
    session.execute(
        insert(PoolChange).values(
            pool_id=pool.id, revision=pool.revision, mac=mac, held=held, token=pool.index_token
        )
    )


def prune_history(session: Session) -> int:
    """Drop change rows no process needs to replay any more; returns how many."""
    removed = 0
    for pool_id, revision in session.execute(select(Pool.id, Pool.revision)).all():
        result = session.execute(
            delete(PoolChange).where(
                PoolChange.pool_id == pool_id, PoolChange.revision < revision - CHANGE_HISTORY
            )
        )
        removed += result.rowcount or 0  # type: ignore[attr-defined]
    return removed


def forget(session: Session) -> None:
    """Drop this process's cached indexes for the session's database (tests, after restores)."""
    _cache_for(session).clear()


__all__ = [
    "advance_index",
    "invalidate",
    "pool_index",
    "pool_ranges",
    "private_index",
    "prune_history",
    "record_change",
]
