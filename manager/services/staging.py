"""Staged batches: a large batch written in short transactions, all of it or none in the end.

An import of 10^5 NICs written in one transaction holds the write lock for seconds (on SQLite
nobody else can write meanwhile). Written in chunks instead, each chunk's allocations are
*staged*: ``pending``, stamped with the batch's ``transaction`` (:func:`new_stamp`) and expiring
after :data:`STAGE_TTL_SECONDS`. They hold their MACs from the moment they are written, so
nothing else can take them, and other writers get the lock between chunks. Then:

- :func:`confirm_staged` makes the whole batch lasting in one short transaction (one UPDATE);
- a batch that fails part way is undone by :func:`release_staged` (in short transactions too);
- a batch whose writer died (``kill -9``) is undone by the expiry sweep: its rows are pending
  allocations whose time runs out, released like any other. Re-running the batch before that
  finds them as they are ("unchanged") and its confirmation makes them lasting with its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.db import Allocation
from manager.services.allocations import release_allocation

#: How long staged allocations live unless confirmed: far longer than any batch's writing.
STAGE_TTL_SECONDS = 3600
#: Every staged batch's stamp starts with this (a KubeVirt transaction stamp is a timestamp).
STAGE_PREFIX = "staged:"

_alloc: Table = Allocation.__table__  # type: ignore[assignment]


def new_stamp(kind: str) -> str:
    """A fresh stamp for one staged batch, e.g. ``staged:import:9f…`` (at most 64 characters)."""
    return f"{STAGE_PREFIX}{kind[:24]}:{uuid.uuid4().hex}"


def confirm_staged(
    session: Session,
    actor: Actor,
    stamp: str,
    *,
    owner_kind: str | None = None,
    owner_uids: Collection[str] = (),
) -> int:
    """Make a staged batch lasting (one UPDATE); how many allocations it confirmed.

    ``owner_kind`` and ``owner_uids``: the batch's owners. Their allocations staged by an
    earlier batch that died before its confirmation are confirmed too: the batch found them as
    they are and reports them unchanged, so they must not expire.
    """
    del actor  # the caller records one event for the whole batch
    pending = _alloc.c.state == "pending"
    values = {"state": "allocated", "expires_at": None, "updated_at": datetime.now(UTC)}
    conn = session.connection()
    done = conn.execute(
        update(_alloc).where(pending, _alloc.c.transaction == stamp).values(values)
    ).rowcount
    if owner_kind is not None and owner_uids:
        wanted = set(owner_uids)
        leftovers = [
            row_id
            for row_id, uid in conn.execute(
                select(_alloc.c.id, _alloc.c.owner_uid).where(
                    pending,
                    _alloc.c.owner_kind == owner_kind,
                    _alloc.c.transaction.startswith(STAGE_PREFIX, autoescape=True),
                    _alloc.c.transaction != stamp,
                )
            )
            if uid in wanted
        ]
        for start in range(0, len(leftovers), 500):
            chunk = leftovers[start : start + 500]
            done += conn.execute(
                update(_alloc).where(pending, _alloc.c.id.in_(chunk)).values(values)
            ).rowcount
    session.expire_all()
    return done or 0


def release_staged(session: Session, actor: Actor, stamp: str, *, limit: int = 500) -> int:
    """Release up to ``limit`` allocations of a staged batch (undoing it); how many.

    The caller repeats it, each call in its own short transaction, until it answers 0.
    """
    ids = session.scalars(
        select(_alloc.c.id)
        .where(_alloc.c.state == "pending", _alloc.c.transaction == stamp)
        .order_by(_alloc.c.id)
        .limit(limit)
    ).all()
    for allocation_id in ids:
        release_allocation(session, actor, allocation_id, reason="undone")
    return len(ids)


__all__ = [
    "STAGE_PREFIX",
    "STAGE_TTL_SECONDS",
    "confirm_staged",
    "new_stamp",
    "release_staged",
]
