"""Pools and their ranges: create, read, update, delete, statistics, the default pool."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from manager.core.actor import Actor
from manager.core.errors import (
    DuplicatesExist,
    InvalidInput,
    InvalidRange,
    NameInUse,
    NotFound,
    PoolInUse,
    RangeOverlap,
)
from manager.core.mac import format_mac_int
from manager.core.ranges import MacRange, RangeSet
from manager.db import Allocation, HeldMac, Pool, PoolRange, Scope
from manager.services.audit import record_event
from manager.services.common import check_description, get_pool, lock_pools, lock_ranges
from manager.services.index_cache import pool_ranges, record_change
from manager.services.pool_counters import recount_external

DEFAULT_POOL_NAME = "Default"
MAX_NAME_LENGTH = 255
MAX_RANGES = 1000

#: What callers may pass as a range: a MacRange, "START-END", (start, end) or {"start", "end"}.
RangeInput = MacRange | str | Sequence[str] | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    allocated: int
    available: int
    external: int
    duplicates: int


def coerce_range(value: RangeInput) -> MacRange:
    """Turn any accepted range input into a :class:`MacRange`."""
    if isinstance(value, MacRange):
        return value
    if isinstance(value, str):
        return MacRange.parse_text(value)
    if isinstance(value, Mapping):
        if set(value) - {"start", "end", "id"} or not {"start", "end"} <= set(value):
            raise InvalidRange(f"A range needs exactly 'start' and 'end', got {dict(value)!r}.")
        return MacRange.parse(value["start"], value["end"])
    if isinstance(value, Sequence) and len(value) == 2:
        return MacRange.parse(value[0], value[1])
    raise InvalidRange(f"{value!r} is not a range: give START-END or a start and an end.")


def coerce_ranges(values: Iterable[RangeInput]) -> RangeSet:
    """A non-empty, internally non-overlapping set of ranges."""
    if isinstance(values, str | Mapping):
        values = [values]
    ranges = [coerce_range(v) for v in values]
    if not ranges:
        raise InvalidRange("A pool needs at least one range.", field="ranges")
    if len(ranges) > MAX_RANGES:
        raise InvalidRange(f"A pool may have at most {MAX_RANGES} ranges.", field="ranges")
    return RangeSet(ranges)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("A pool name must be a non-empty string.", field="name")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"Pool name is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed.",
            field="name",
        )
    if not name.isprintable():
        raise InvalidInput(f"Pool name {name!r} contains control characters.", field="name")
    return name


def _check_name_free(session: Session, name: str, *, exclude_id: int | None = None) -> None:
    query = select(Pool).where(Pool.name_key == name.lower())
    if exclude_id is not None:
        query = query.where(Pool.id != exclude_id)
    other = session.scalars(query).first()
    if other is not None:
        raise NameInUse(
            f"A pool named '{other.name}' already exists; pool names are unique regardless "
            "of case.",
            field="name",
            details={"pool_id": other.id, "name": other.name},
        )


def _check_overlaps(session: Session, ranges: RangeSet, *, exclude_id: int | None) -> None:
    conflicts = []
    for rng in ranges:
        query = (
            select(PoolRange, Pool.name)
            .join(Pool, Pool.id == PoolRange.pool_id)
            .where(PoolRange.start_mac <= rng.end, PoolRange.end_mac >= rng.start)
            .order_by(PoolRange.start_mac)
        )
        if exclude_id is not None:
            query = query.where(PoolRange.pool_id != exclude_id)
        for other, pool_name in session.execute(query).all():
            conflicts.append((rng, pool_name, other))
    if conflicts:
        sentences = [
            f"Range {rng} overlaps pool '{name}' range "
            f"{format_mac_int(o.start_mac)}-{format_mac_int(o.end_mac)}."
            for rng, name, o in conflicts
        ]
        raise RangeOverlap(
            " ".join(sentences) + " Ranges of different pools must not overlap.",
            field="ranges",
            details={
                "conflicts": [
                    {
                        "range": str(rng),
                        "pool": name,
                        "pool_id": o.pool_id,
                        "pool_range": f"{format_mac_int(o.start_mac)}-{format_mac_int(o.end_mac)}",
                        "range_id": o.id,
                    }
                    for rng, name, o in conflicts
                ]
            },
        )


def _held_in(session: Session, ranges: RangeSet) -> int:
    return sum(
        session.scalar(select(func.count()).where(HeldMac.mac >= r.start, HeldMac.mac <= r.end))
        or 0
        for r in ranges
    )


def _set_ranges(session: Session, pool: Pool, ranges: RangeSet) -> None:
    existing = {(r.start_mac, r.end_mac): r for r in pool.ranges}
    wanted = {(r.start, r.end) for r in ranges}
    for key, row in existing.items():
        if key not in wanted:
            pool.ranges.remove(row)
    for start, end in sorted(wanted - set(existing)):
        pool.ranges.append(PoolRange(start_mac=start, end_mac=end))
    session.flush()
    # Held MACs are never moved: those now outside the ranges simply become external.
    pool.held_count = 0
    pool.held_count = _held_in(session, ranges)
    recount_external(session, pool)
    record_change(session, pool, mac=None, held=False)


def _describe(pool: Pool) -> dict[str, object]:
    return {
        "name": pool.name,
        "description": pool.description,
        "allow_duplicates": pool.allow_duplicates,
        "ranges": [str(r) for r in pool_ranges(pool)],
    }


def _checked_pool(
    name: object, description: object, ranges: Iterable[RangeInput], allow_duplicates: object
) -> tuple[str, str, RangeSet]:
    name = _check_name(name)
    checked_description = check_description(description)
    range_set = coerce_ranges(ranges)
    if not isinstance(allow_duplicates, bool):
        raise InvalidInput("allow_duplicates must be true or false.", field="allow_duplicates")
    return name, checked_description, range_set


def planned_pool(
    session: Session,
    *,
    name: str,
    ranges: Iterable[RangeInput],
    description: str = "",
    allow_duplicates: bool = False,
) -> Pool:
    """The pool :func:`create_pool` would create, checked as it checks it, not written: a
    transient object (no id) for a plan made ahead of its write, which creates it for real."""
    name, description, range_set = _checked_pool(name, description, ranges, allow_duplicates)
    _check_name_free(session, name)
    _check_overlaps(session, range_set, exclude_id=None)
    return Pool(
        name=name,
        name_key=name.lower(),
        description=description,
        allow_duplicates=allow_duplicates,
        is_default=False,
        revision=0,
        index_token=0,
        cursor=None,
        held_count=_held_in(session, range_set),
        low_warned=False,
        external_count=0,
        duplicate_count=0,
        ranges=[PoolRange(start_mac=r.start, end_mac=r.end) for r in range_set],
    )


def create_pool(
    session: Session,
    actor: Actor,
    *,
    name: str,
    ranges: Iterable[RangeInput],
    description: str = "",
    allow_duplicates: bool = False,
    is_default: bool = False,
) -> Pool:
    """Create a pool; refuses a taken name and any range overlapping another pool's."""
    name, description, range_set = _checked_pool(name, description, ranges, allow_duplicates)
    lock_ranges(session)
    _check_name_free(session, name)
    _check_overlaps(session, range_set, exclude_id=None)
    pool = Pool(
        name=name,
        name_key=name.lower(),
        description=description,
        allow_duplicates=allow_duplicates,
        is_default=is_default,
        revision=-1,
    )
    session.add(pool)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent create won the race for the name
        raise NameInUse(f"A pool named '{name}' already exists.", field="name") from exc
    _set_ranges(session, pool, range_set)
    record_event(
        session,
        actor,
        action="pool.create",
        target_type="pool",
        target_id=pool.id,
        target=pool.name,
        details=_describe(pool),
    )
    return pool


def update_pool(
    session: Session,
    actor: Actor,
    pool_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    allow_duplicates: bool | None = None,
    ranges: Iterable[RangeInput] | None = None,
) -> Pool:
    """Change a pool's fields; ``None`` leaves a field as it is.

    Replacing the ranges never moves a held MAC: MACs left outside become *external*.
    Turning ``allow_duplicates`` off is refused while the pool holds duplicates.
    """
    get_pool(session, pool_id)
    lock_ranges(session)
    pool = lock_pools(session, [pool_id])[pool_id]
    before = _describe(pool)
    if name is not None:
        name = _check_name(name)
        _check_name_free(session, name, exclude_id=pool.id)
        pool.name, pool.name_key = name, name.lower()
    if description is not None:
        pool.description = check_description(description)
    if allow_duplicates is not None:
        if not isinstance(allow_duplicates, bool):
            raise InvalidInput("allow_duplicates must be true or false.", field="allow_duplicates")
        if pool.allow_duplicates and not allow_duplicates:
            dups = duplicate_macs(session, pool)
            if dups:
                shown = ", ".join(format_mac_int(m) for m in dups[:20])
                more = f" and {len(dups) - 20} more" if len(dups) > 20 else ""
                raise DuplicatesExist(
                    f"Pool '{pool.name}' holds {len(dups)} duplicate MAC address(es) ({shown}"
                    f"{more}); release the extra holders before turning duplicates off.",
                    field="allow_duplicates",
                    details={"macs": [format_mac_int(m) for m in dups]},
                )
        pool.allow_duplicates = allow_duplicates
    if ranges is not None:
        range_set = coerce_ranges(ranges)
        _check_overlaps(session, range_set, exclude_id=pool.id)
        _set_ranges(session, pool, range_set)
    after = _describe(pool)
    changes = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
    if changes:
        record_event(
            session,
            actor,
            action="pool.update",
            target_type="pool",
            target_id=pool.id,
            target=pool.name,
            details=changes,
        )
    return pool


def add_range(session: Session, actor: Actor, pool_id: int, rng: RangeInput) -> PoolRange:
    """Add one range to a pool."""
    pool = get_pool(session, pool_id)
    new = coerce_range(rng)
    ranges = coerce_ranges([*pool_ranges(pool), new])
    update_pool(session, actor, pool_id, ranges=ranges)
    return next(r for r in pool.ranges if (r.start_mac, r.end_mac) == (new.start, new.end))


def remove_range(session: Session, actor: Actor, pool_id: int, range_id: int) -> None:
    """Remove one range; a pool keeps at least one."""
    pool = get_pool(session, pool_id)
    row = next((r for r in pool.ranges if r.id == range_id), None)
    if row is None:
        raise NotFound(f"Pool '{pool.name}' has no range {range_id}.")
    if len(pool.ranges) == 1:
        raise InvalidRange(
            f"Range {range_id} is the last range of pool '{pool.name}'; a pool needs at least "
            "one range (edit it instead).",
            field="ranges",
        )
    rest = [MacRange(r.start_mac, r.end_mac) for r in pool.ranges if r.id != range_id]
    update_pool(session, actor, pool_id, ranges=rest)


def delete_pool(session: Session, actor: Actor, pool_id: int) -> None:
    """Delete a pool; refused for the default pool, an assigned pool or one holding MACs."""
    pool = get_pool(session, pool_id)
    if pool.is_default:
        raise PoolInUse(f"Pool '{pool.name}' is the default pool and cannot be deleted.")
    lock_ranges(session)
    scopes = session.scalars(
        select(Scope.path).where(Scope.pool_id == pool.id).order_by(Scope.path)
    ).all()
    if scopes:
        shown = ", ".join(scopes[:5]) + (f" and {len(scopes) - 5} more" if len(scopes) > 5 else "")
        raise PoolInUse(
            f"Pool '{pool.name}' is assigned to scope(s) {shown}; assign another pool to them "
            "first.",
            details={"scopes": list(scopes[:5]), "scope_count": len(scopes)},
        )
    held = session.scalar(select(func.count()).where(Allocation.pool_id == pool.id)) or 0
    if held:
        raise PoolInUse(
            f"Pool '{pool.name}' holds {held} allocation(s); release them before deleting it.",
            details={"allocations": held},
        )
    details = _describe(pool)
    session.delete(pool)
    session.flush()
    record_event(
        session,
        actor,
        action="pool.delete",
        target_type="pool",
        target_id=pool_id,
        target=details["name"],  # type: ignore[arg-type]
        details=details,
    )


def list_pools(session: Session) -> list[Pool]:
    """Every pool, the default first, then by name."""
    return list(session.scalars(select(Pool).order_by(Pool.is_default.desc(), Pool.name_key)))


def find_pool_by_name(session: Session, name: str) -> Pool:
    """The pool with this name (case-insensitive), or :class:`NotFound`."""
    if not isinstance(name, str):
        raise InvalidInput(f"{name!r} is not a pool name.", field="name")
    pool = session.scalars(select(Pool).where(Pool.name_key == name.strip().lower())).first()
    if pool is None:
        raise NotFound(f"There is no pool named '{name}'.")
    return pool


def get_default_pool(session: Session) -> Pool:
    pool = session.scalars(select(Pool).where(Pool.is_default.is_(True))).first()
    if pool is None:
        raise NotFound("There is no default pool yet: run `macpool db upgrade` or start MacPool.")
    return pool


def containing_pool(session: Session, mac: int) -> Pool | None:
    """The pool whose range contains ``mac`` (ranges of different pools never overlap)."""
    return session.scalars(
        select(Pool)
        .join(PoolRange, PoolRange.pool_id == Pool.id)
        .where(PoolRange.start_mac <= mac, PoolRange.end_mac >= mac)
    ).first()


def duplicate_macs(session: Session, pool: Pool) -> list[int]:
    """MACs that one of this pool's allocations shares with another holder."""
    other = aliased(Allocation)
    return list(
        session.scalars(
            select(Allocation.mac)
            .where(
                Allocation.pool_id == pool.id,
                exists().where(and_(other.mac == Allocation.mac, other.id != Allocation.id)),
            )
            .distinct()
            .order_by(Allocation.mac)
        )
    )


def pool_statistics(session: Session, pool: Pool) -> PoolStats:
    """Size, allocated (held MACs inside its ranges), available, external, duplicates.

    Read from the pool's row and ranges: O(1) in the number of allocations.
    """
    size = pool_ranges(pool).size
    return PoolStats(
        size=size,
        allocated=pool.held_count,
        available=max(size - pool.held_count, 0),
        external=pool.external_count,
        duplicates=pool.duplicate_count,
    )


def random_default_range() -> MacRange:
    """A random locally administered 2^24 block 02:XX:XX:00:00:00–02:XX:XX:ff:ff:ff."""
    middle = secrets.randbits(16)
    start = (0x02 << 40) | (middle << 24)
    return MacRange(start, start | 0xFFFFFF)


def ensure_default_pool(
    session: Session, actor: Actor, *, default_range: str | None = None
) -> tuple[Pool, bool]:
    """The default pool, created on first start; returns (pool, created)."""
    lock_ranges(session)
    existing = session.scalars(select(Pool).where(Pool.is_default.is_(True))).first()
    if existing is not None:
        return existing, False
    rng = MacRange.parse_text(default_range) if default_range else random_default_range()
    name = DEFAULT_POOL_NAME
    if session.scalars(select(Pool).where(Pool.name_key == name.lower())).first() is not None:
        name = "MacPool default"
    pool = create_pool(
        session,
        actor,
        name=name,
        ranges=[rng],
        description="The engine's default pool, created on first start.",
        is_default=True,
    )
    return pool, True


__all__ = [
    "DEFAULT_POOL_NAME",
    "PoolStats",
    "add_range",
    "coerce_range",
    "coerce_ranges",
    "containing_pool",
    "create_pool",
    "delete_pool",
    "duplicate_macs",
    "ensure_default_pool",
    "find_pool_by_name",
    "get_default_pool",
    "get_pool",
    "list_pools",
    "planned_pool",
    "pool_statistics",
    "random_default_range",
    "remove_range",
    "update_pool",
]
