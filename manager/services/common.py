"""Small helpers shared by the services: pages, locks, identifier coercion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from manager.core.errors import InvalidInput, NotFound
from manager.db import Pool
from manager.db.prepared import Prepared

T = TypeVar("T")
M = TypeVar("M")

MAX_PAGE_SIZE = 1000
MAX_DESCRIPTION_LENGTH = 4096
#: Key of the PostgreSQL advisory lock that serializes range and pool-set edits.
RANGES_LOCK_KEY = 0x6D6163706F6F6C  # "macpool"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    limit: int
    offset: int


def check_paging(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"Page size {limit} is out of bounds: use 1 to {MAX_PAGE_SIZE}.")
    if offset < 0:
        raise InvalidInput(f"Offset {offset} is negative.")


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock_ranges(session: Session) -> None:
    """Serialize edits of pools and ranges (overlap checks read then write).

    On SQLite the write transaction already holds the database lock (BEGIN IMMEDIATE).
    """
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RANGES_LOCK_KEY})


def lock_pools(
    session: Session, pool_ids: Sequence[int], *, load_ranges: bool = True
) -> dict[int, Pool]:
    """Lock pool rows in id order (no deadlocks) and return them fresh from the database.

    ``load_ranges=False`` loads the ranges only when touched: the allocation hot path takes
    them from the validated index cache instead (one query less per allocation).
    """
    ids = sorted(set(pool_ids))
    if not load_ranges:
        # Core, not an ORM query: about three times cheaper per statement on the hot path.
        session.flush()
        conn = session.connection()
        if len(ids) == 1:  # the usual case: prepared, run on the DBAPI cursor
            found = _LOCK_POOL_ROW.rows(conn, {"id": ids[0]})
            rows: Sequence[Mapping[Any, Any]] = [
                dict(zip(_POOL_KEYS, r, strict=True)) for r in found
            ]
        else:
            rows = conn.execute(_LOCK_POOL_ROWS, {"ids": ids}).mappings().all()
        return {row["id"]: loaded(session, Pool, row) for row in rows}
    return {pool.id: pool for pool in session.scalars(_LOCK_POOLS, {"ids": ids}).all()}


def loaded(session: Session, model: type[M], values: Mapping[Any, Any]) -> M:
    """The ORM object of a row read with Core, as a query with ``populate_existing`` gives it.

    An object already in the session gets the row's values; otherwise one is made persistent
    from them (unread relationships load on first access).
    """
    key = session.identity_key(model, (values["id"],))
    found = session.identity_map.get(key)
    if found is not None:
        for name, value in values.items():
            set_committed_value(found, name, value)
        return found  # type: ignore[no-any-return]
    obj = detached(model, values)
    session.add(obj)
    return obj


def detached(model: type[M], values: Mapping[Any, Any]) -> M:
    """A detached ORM object holding ``values`` as its loaded state (primary key included).

    Built as the ORM builds objects from rows (no ``__init__``, no attribute events: those
    showed in the allocation profile); columns not in ``values`` and relationships load when
    first touched once the object is in a session.
    """
    obj: M = manager_of_class(model).new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    return obj


# Built once: constructing the statement cost more than running it on the allocation hot path.
_LOCK_POOLS = (
    select(Pool)
    .where(Pool.id.in_(bindparam("ids", expanding=True)))
    .order_by(Pool.id)
    .with_for_update()
    .execution_options(populate_existing=True)
)
_POOL_KEYS = tuple(c.key for c in Pool.__table__.columns)
_LOCK_POOL_ROW = Prepared(
    select(*Pool.__table__.columns).where(Pool.__table__.c.id == bindparam("id")).with_for_update()
)
_LOCK_POOL_ROWS = (
    select(*Pool.__table__.columns)
    .where(Pool.__table__.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(Pool.__table__.c.id)
    .with_for_update()
)


def check_id(value: object, what: str) -> int:
    """``value`` as a row id; a bool or a string (even of digits) is refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{value!r} is not {what} id.", field=f"{what.split()[-1]}_id")
    return value


def check_description(value: object) -> str:
    """A free-text description: a string of at most MAX_DESCRIPTION_LENGTH characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"Description {value!r} is not text.", field="description")
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            f"Description is {len(value)} characters long; at most {MAX_DESCRIPTION_LENGTH} "
            "are allowed.",
            field="description",
        )
    return value


def get_pool(session: Session, pool_id: int) -> Pool:
    """The pool with this id, or :class:`NotFound`."""
    check_id(pool_id, "a pool")
    pool = session.get(Pool, pool_id)
    if pool is None:
        raise NotFound(f"Pool {pool_id} does not exist.", details={"pool_id": pool_id})
    return pool


__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_PAGE_SIZE",
    "Page",
    "check_description",
    "check_id",
    "check_paging",
    "detached",
    "get_pool",
    "loaded",
    "lock_pools",
    "lock_ranges",
]
