"""The topology generation: bumped in the same transaction as every change it stands for.

Processes cache what is costly to resolve on every request (a namespace's scope and effective
pool, MACs reserved ahead from a pool). Such a cache is only as good as its invalidation, and
the changes come from any replica. So every flush that changes the topology (a scope's parent,
path or pool; a pool's ranges or duplicates rule; a scope or pool deleted) also bumps the
``topology`` row of ``generations``, inside the flush, so the change and the bump commit or
roll back together. A reader that sees generation *g* in its transaction sees every change up
to *g*; a cache entry stamped with *g* is current while the table still says *g*.

New scopes do not bump it: a new scope changes no existing scope's effective pool, and a cache
has no entry for it yet. Allocations, cursors and counters never bump it.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Table, event, insert, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from manager.db.models import Generation, Pool, PoolRange, Scope

TOPOLOGY: Final = "topology"
_table: Table = Generation.__table__  # type: ignore[assignment]

#: Columns whose change alters what a cached scope resolves to, or what a pool may hand out.
_WATCHED: Final = {
    Scope: ("parent_id", "path", "pool_id", "name"),
    Pool: ("allow_duplicates", "is_default"),
}


def _changes_topology(session: Session) -> bool:
    for obj in session.deleted:
        if isinstance(obj, Scope | Pool | PoolRange):
            return True
    for obj in session.new:
        if isinstance(obj, PoolRange | Pool):
            return True
    for obj in session.dirty:
        if isinstance(obj, PoolRange):
            return True
        watched = _WATCHED.get(type(obj))
        if watched and session.is_modified(obj):
            state = inspect(obj)
            if any(state.attrs[name].history.has_changes() for name in watched):
                return True
    return False


def bump(conn: Connection) -> None:
    """Move the topology generation on (in the caller's transaction)."""
    table = _table
    done = conn.execute(
        update(table).where(table.c.name == TOPOLOGY).values(value=table.c.value + 1)
    )
    if done.rowcount == 0:  # a schema made without the migration's row (tests' create_all)
        conn.execute(insert(table).values(name=TOPOLOGY, value=2))


def current(conn: Connection) -> int:
    """The topology generation as this transaction sees it (1 before any change)."""
    table = _table
    value = conn.execute(select(table.c.value).where(table.c.name == TOPOLOGY)).scalar()
    return 1 if value is None else int(value)


@event.listens_for(Session, "before_flush")
def _bump_on_topology_change(session: Session, _context: Any, _instances: Any) -> None:
    if _changes_topology(session):
        bump(session.connection())


__all__ = ["TOPOLOGY", "bump", "current"]
