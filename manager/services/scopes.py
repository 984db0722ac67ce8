"""Scopes: the engine → data center → cluster → namespace tree and pool assignment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import (
    InvalidInput,
    InvalidScope,
    MacPoolError,
    NameInUse,
    NotFound,
    ScopeNotEmpty,
)
from manager.db import Allocation, Pool, Scope
from manager.db.prepared import Prepared
from manager.services.audit import record_event
from manager.services.common import check_description, get_pool, loaded
from scopes import (
    ROOT_PATH,
    ScopeKind,
    ancestor_paths,
    check_parent,
    child_path,
    resolve_effective_pool,
    split_path,
    validate_scope_name,
)
from scopes.kinds import parse_kind

ScopeRef = int | str | Scope

_UNSET = object()


@dataclass(frozen=True, slots=True)
class ResolvedPool:
    pool: Pool
    #: The scope the pool is assigned to: the scope itself or the ancestor it inherits from.
    source: Scope
    inherited: bool


def get_scope(session: Session, ref: ScopeRef) -> Scope:
    """A scope by id, by path (``/dc1/c1``) or as given; :class:`NotFound` otherwise."""
    if isinstance(ref, Scope):
        return ref
    if isinstance(ref, bool):
        raise InvalidScope(f"{ref!r} is not a scope id or path.", field="scope")
    if isinstance(ref, int):
        scope = session.get(Scope, ref)
        if scope is None:
            raise NotFound(f"Scope {ref} does not exist.", details={"scope_id": ref})
        return scope
    if isinstance(ref, str):
        if ref.isdigit():
            return get_scope(session, int(ref))
        path = _normalize_path(ref)
        found = session.scalars(select(Scope).where(Scope.path == path)).first()
        if found is None:
            raise NotFound(f"Scope '{path}' does not exist.", details={"path": path})
        return found
    raise InvalidScope(f"{ref!r} is not a scope id or path.", field="scope")


def _normalize_path(path: str) -> str:
    parts = split_path(path.strip())
    return "/" + "/".join(parts) if parts else ROOT_PATH


def ensure_engine(session: Session, actor: Actor, *, default_pool: Pool) -> Scope:
    """The engine scope (root, path ``/``), created with the default pool on first start."""
    engine = session.scalars(select(Scope).where(Scope.path == ROOT_PATH)).first()
    if engine is None:
        engine = Scope(kind=ScopeKind.ENGINE.value, name="engine", path=ROOT_PATH)
        engine.pool_id = default_pool.id
        session.add(engine)
        session.flush()
        record_event(
            session,
            actor,
            action="scope.create",
            target_type="scope",
            target_id=engine.id,
            target=ROOT_PATH,
            details={"kind": "engine", "pool": default_pool.name},
        )
    elif engine.pool_id != default_pool.id:
        engine.pool_id = default_pool.id
    return engine


def _check_sibling_free(session: Session, parent: Scope, name: str, exclude: int | None) -> None:
    query = select(Scope.id).where(Scope.parent_id == parent.id, Scope.name == name)
    if exclude is not None:
        query = query.where(Scope.id != exclude)
    if session.scalar(query) is not None:
        raise NameInUse(
            f"Scope '{child_path(parent.path, name)}' already exists.",
            field="name",
            details={"path": child_path(parent.path, name)},
        )


def planned_scope(
    session: Session,
    *,
    kind: str | ScopeKind,
    name: str,
    parent: ScopeRef = ROOT_PATH,
    pool_id: int | None = None,
    description: str = "",
) -> Scope:
    """The scope :func:`create_scope` creates, checked as it checks it, not written: a
    transient object (no id). A plan made ahead of its write may give a planned parent (a
    transient :class:`Scope` with a made-up negative id, which has no children yet) and a
    planned pool (a negative ``pool_id``)."""
    return _new_scope(session, kind, name, parent, pool_id, description, planned=True)


def _new_scope(
    session: Session,
    kind: str | ScopeKind,
    name: str,
    parent: ScopeRef,
    pool_id: int | None,
    description: str,
    *,
    planned: bool,
) -> Scope:
    scope_kind = parse_kind(kind)
    name = validate_scope_name(name)
    description = check_description(description)
    parent_scope = get_scope(session, parent)
    check_parent(scope_kind, ScopeKind(parent_scope.kind))
    if not planned or parent_scope.id > 0:
        _check_sibling_free(session, parent_scope, name, exclude=None)
    if pool_id is not None and (not planned or pool_id > 0):
        get_pool(session, pool_id)
    return Scope(
        kind=scope_kind.value,
        name=name,
        parent_id=parent_scope.id,
        path=child_path(parent_scope.path, name),
        pool_id=pool_id,
        description=description,
    )


def create_scope(
    session: Session,
    actor: Actor,
    *,
    kind: str | ScopeKind,
    name: str,
    parent: ScopeRef = ROOT_PATH,
    pool_id: int | None = None,
    description: str = "",
) -> Scope:
    """Create a scope under ``parent`` (id or path), optionally assigning it a pool."""
    scope = _new_scope(session, kind, name, parent, pool_id, description, planned=False)
    session.add(scope)
    session.flush()
    record_event(
        session,
        actor,
        action="scope.create",
        target_type="scope",
        target_id=scope.id,
        target=scope.path,
        details={"kind": scope.kind, "pool_id": pool_id},
    )
    return scope


def find_child_scope(session: Session, *, parent: Scope, name: str) -> Scope | None:
    """The child of ``parent`` named ``name``, or ``None``."""
    return session.scalars(
        select(Scope).where(Scope.parent_id == parent.id, Scope.name == name)
    ).first()


def ensure_scope(
    session: Session, actor: Actor, *, parent: ScopeRef, kind: str, name: str
) -> Scope:
    """The child ``name`` of ``parent``, created (inheriting its pool) when first seen."""
    parent_scope = get_scope(session, parent)
    found = find_child_scope(session, parent=parent_scope, name=name)
    if found is not None:
        if found.kind != kind:
            raise InvalidScope(f"Scope '{found.path}' is a {found.kind} scope, not a {kind} scope.")
        return found
    return create_scope(session, actor, kind=kind, name=name, parent=parent_scope)


def ensure_path(session: Session, actor: Actor, path: str, *, kinds: list[str]) -> Scope:
    """Create the scopes along ``path`` that are missing, with ``kinds`` per level (root excluded)."""
    parts = split_path(path)
    if len(parts) != len(kinds):
        raise InvalidScope(f"Path '{path}' has {len(parts)} levels, expected {len(kinds)}.")
    scope = get_scope(session, ROOT_PATH)
    for name, kind in zip(parts, kinds, strict=True):
        scope = ensure_scope(session, actor, parent=scope, kind=kind, name=name)
    return scope


def list_scopes(session: Session) -> list[Scope]:
    """Every scope ordered by path (a depth-first walk of the tree)."""
    return list(session.scalars(select(Scope).order_by(Scope.path)))


def children(session: Session, scope: Scope) -> list[Scope]:
    return list(
        session.scalars(select(Scope).where(Scope.parent_id == scope.id).order_by(Scope.name))
    )


#: Scopes by path, built once (statement construction showed in the allocation profile).
_SCOPES_BY_PATH = select(Scope).where(Scope.path.in_(bindparam("paths", expanding=True)))
_SCOPE_ROWS_BY_PATH = select(*Scope.__table__.columns).where(
    Scope.__table__.c.path.in_(bindparam("paths", expanding=True))
)
_SCOPE_KEYS = tuple(c.key for c in Scope.__table__.columns)
#: The same for one ancestor chain, one prepared statement per depth (chains are short).
_CHAINS: dict[int, Prepared] = {}


def _chain_rows(session: Session, paths: list[str]) -> dict[str, dict[str, Any]]:
    """The scopes at ``paths`` (an ancestor chain), as column dicts keyed by path."""
    statement = _CHAINS.get(len(paths))
    if statement is None:
        names = [f"p{i}" for i in range(len(paths))]
        statement = Prepared(
            select(*Scope.__table__.columns).where(
                Scope.__table__.c.path.in_([bindparam(name) for name in names])
            )
        )
        _CHAINS[len(paths)] = statement
    session.flush()
    params = {f"p{i}": path for i, path in enumerate(paths)}
    rows = (
        dict(zip(_SCOPE_KEYS, row, strict=True))
        for row in statement.rows(session.connection(), params)
    )
    return {row["path"]: row for row in rows}


def _effective(
    session: Session, target: Scope, chain: dict[str, Scope] | None = None
) -> tuple[int, list[Scope], bool, int]:
    """(pool id, scopes from ``target`` to the root, inherited, id of the scope it comes from).

    ``chain`` (scopes by path, already loaded along ``target``'s path) saves the query.
    """
    paths = ancestor_paths(target.path)
    if chain is None:
        chain = {s.path: s for s in session.scalars(_SCOPES_BY_PATH, {"paths": paths})}
    ordered = [chain[p] for p in paths if p in chain]
    found = resolve_effective_pool([(s.id, s.pool_id) for s in ordered])
    if found is None:
        raise NotFound(f"Scope '{target.path}' has no pool: the engine scope has none assigned.")
    return found.pool_id, ordered, found.inherited, found.source_scope_id


def scope_and_pool_id(session: Session, scope: ScopeRef) -> tuple[Scope, int]:
    """The scope and the id of its effective pool, without loading the pool.

    The allocation hot path: the scope's ancestors (and the scope itself, when given by path)
    are read in one prepared query (:func:`_chain_rows`).
    """
    given = scope if isinstance(scope, Scope) else None
    if given is None and not (isinstance(scope, str) and not scope.strip().isdigit()):
        given = get_scope(session, scope)  # by id
    path = given.path if given is not None else _normalize_path(str(scope))
    chain = _chain_rows(session, ancestor_paths(path))
    if path not in chain:
        raise NotFound(f"Scope '{path}' does not exist.", details={"path": path})
    # Plain rows (an ORM query costs about three times as much); only the target becomes an
    # ORM object (when it was given by path), for the allocation's ``scope``.
    ordered = [chain[p] for p in ancestor_paths(path) if p in chain]
    found = resolve_effective_pool([(s["id"], s["pool_id"]) for s in ordered])
    if found is None:
        raise NotFound(f"Scope '{path}' has no pool: the engine scope has none assigned.")
    target = given if given is not None else loaded(session, Scope, chain[path])
    return target, found.pool_id


def planned_pool_id(session: Session, path: str) -> int:
    """The effective pool of the scope at ``path``, or of the scope that would be created there
    (a namespace never seen inherits from its nearest existing ancestor)."""
    path = _normalize_path(path)
    chain = _chain_rows(session, ancestor_paths(path))
    ordered = [chain[p] for p in ancestor_paths(path) if p in chain]
    found = resolve_effective_pool([(s["id"], s["pool_id"]) for s in ordered])
    if found is None:
        raise NotFound(f"Scope '{path}' has no pool: the engine scope has none assigned.")
    return found.pool_id


def scopes_and_pool_ids(
    session: Session, refs: Sequence[ScopeRef]
) -> list[tuple[Scope, int] | MacPoolError]:
    """:func:`scope_and_pool_id` for many scopes at once: per ref, the pair or the error.

    Two queries whatever the number of scopes (the scopes given by id, then every ancestor
    chain), instead of two per scope: batches of allocations (the oVirt importer, the Kubernetes
    reconciler's initial sync) span many clusters and namespaces.
    """
    given: dict[int, Scope] = {}
    paths: dict[int, str] = {}
    answers: dict[int, tuple[Scope, int] | MacPoolError] = {}
    by_id: dict[int, list[int]] = {}
    for i, ref in enumerate(refs):
        if isinstance(ref, Scope):
            given[i] = ref
        elif isinstance(ref, int) and not isinstance(ref, bool):
            by_id.setdefault(ref, []).append(i)
        elif isinstance(ref, str) and ref.strip().isdigit():
            by_id.setdefault(int(ref), []).append(i)
        elif isinstance(ref, str):
            paths[i] = _normalize_path(ref)
        else:
            answers[i] = InvalidScope(f"{ref!r} is not a scope id or path.", field="scope")
    if by_id:
        found = {
            scope.id: scope
            for scope in session.scalars(select(Scope).where(Scope.id.in_(sorted(by_id))))
        }
        for scope_id, indexes in by_id.items():
            for i in indexes:
                if scope_id in found:
                    given[i] = found[scope_id]
                else:
                    answers[i] = NotFound(
                        f"Scope {scope_id} does not exist.", details={"scope_id": scope_id}
                    )
    paths.update({i: scope.path for i, scope in given.items()})
    wanted = sorted({p for path in paths.values() for p in ancestor_paths(path)})
    session.flush()
    chain = {
        row.path: row
        for row in session.connection().execute(_SCOPE_ROWS_BY_PATH, {"paths": wanted})
    }
    for i, path in paths.items():
        if path not in chain:
            answers[i] = NotFound(f"Scope '{path}' does not exist.", details={"path": path})
            continue
        ordered = [chain[p] for p in ancestor_paths(path) if p in chain]
        effective = resolve_effective_pool([(s.id, s.pool_id) for s in ordered])
        if effective is None:
            answers[i] = NotFound(
                f"Scope '{path}' has no pool: the engine scope has none assigned."
            )
            continue
        target = given.get(i) or loaded(session, Scope, chain[path]._mapping)
        answers[i] = (target, effective.pool_id)
    return [answers[i] for i in range(len(refs))]


def resolve_pool(session: Session, scope: ScopeRef) -> ResolvedPool:
    """The scope's effective pool: its own, or the nearest ancestor's (the engine's default)."""
    pool_id, ordered, inherited, source_id = _effective(session, get_scope(session, scope))
    pool = session.get(Pool, pool_id)
    assert pool is not None  # a foreign key guarantees it
    source = next(s for s in ordered if s.id == source_id)
    return ResolvedPool(pool=pool, source=source, inherited=inherited)


def update_scope(
    session: Session,
    actor: Actor,
    scope: ScopeRef,
    *,
    name: str | None = None,
    description: str | None = None,
    pool_id: int | object | None = _UNSET,
    parent: ScopeRef | None = None,
) -> Scope:
    """Rename, describe, (re)assign or clear the pool of (``pool_id=None``), or move a scope."""
    target = get_scope(session, scope)
    changes: dict[str, object] = {}
    if target.kind == ScopeKind.ENGINE.value and (
        name is not None or parent is not None or pool_id is not _UNSET
    ):
        raise InvalidScope(
            "The engine scope is the root: it cannot be renamed or moved, and it always uses "
            "the default pool."
        )
    if pool_id is not _UNSET:
        if pool_id is not None:
            if isinstance(pool_id, bool) or not isinstance(pool_id, int):
                raise InvalidInput(f"{pool_id!r} is not a pool id.", field="pool_id")
            get_pool(session, pool_id)
        if target.pool_id != pool_id:
            changes["pool_id"] = {"from": target.pool_id, "to": pool_id}
            target.pool_id = pool_id
    if description is not None:
        description = check_description(description)
    if description is not None and description != target.description:
        target.description = description
        changes["description"] = description
    if name is not None or parent is not None:
        new_name = validate_scope_name(name) if name is not None else target.name
        new_parent = (
            get_scope(session, parent)
            if parent is not None
            else get_scope(session, target.parent_id or ROOT_PATH)
        )
        if new_parent.path == target.path or new_parent.path.startswith(target.path + "/"):
            raise InvalidScope(
                f"Scope '{target.path}' cannot be moved under itself ('{new_parent.path}').",
                field="parent",
            )
        check_parent(ScopeKind(target.kind), ScopeKind(new_parent.kind))
        _check_sibling_free(session, new_parent, new_name, exclude=target.id)
        old_path, new_path = target.path, child_path(new_parent.path, new_name)
        if new_path != old_path:
            descendants = session.scalars(
                select(Scope).where(Scope.path.startswith(old_path + "/", autoescape=True))
            ).all()
            for desc in descendants:
                desc.path = new_path + desc.path[len(old_path) :]
            target.name, target.parent_id, target.path = new_name, new_parent.id, new_path
            changes["path"] = {"from": old_path, "to": new_path}
    if changes:
        session.flush()
        record_event(
            session,
            actor,
            action="scope.update",
            target_type="scope",
            target_id=target.id,
            target=target.path,
            details=changes,
        )
    return target


def assign_pool(session: Session, actor: Actor, scope: ScopeRef, pool_id: int | None) -> Scope:
    """Assign a pool to a scope, or clear the assignment (``None``) so it inherits again."""
    return update_scope(session, actor, scope, pool_id=pool_id)


def move_scope(session: Session, actor: Actor, scope: ScopeRef, parent: ScopeRef) -> Scope:
    """Move a scope (and its subtree) under another parent; held MACs stay where they are."""
    return update_scope(session, actor, scope, parent=parent)


def delete_scope(session: Session, actor: Actor, scope: ScopeRef) -> None:
    """Delete a scope; refused while it has children or allocations."""
    target = get_scope(session, scope)
    if target.kind == ScopeKind.ENGINE.value:
        raise ScopeNotEmpty("The engine scope is the root of every scope; it cannot be deleted.")
    kids = session.scalar(select(func.count()).where(Scope.parent_id == target.id)) or 0
    if kids:
        raise ScopeNotEmpty(
            f"Scope '{target.path}' has {kids} child scope(s); delete or move them first.",
            details={"children": kids},
        )
    held = session.scalar(select(func.count()).where(Allocation.scope_id == target.id)) or 0
    if held:
        raise ScopeNotEmpty(
            f"Scope '{target.path}' holds {held} allocation(s); release them first.",
            details={"allocations": held},
        )
    path, scope_id = target.path, target.id
    session.delete(target)
    session.flush()
    record_event(
        session,
        actor,
        action="scope.delete",
        target_type="scope",
        target_id=scope_id,
        target=path,
        details={"kind": target.kind},
    )


__all__ = [
    "ResolvedPool",
    "assign_pool",
    "children",
    "create_scope",
    "delete_scope",
    "ensure_engine",
    "ensure_path",
    "ensure_scope",
    "find_child_scope",
    "get_scope",
    "list_scopes",
    "move_scope",
    "planned_scope",
    "resolve_pool",
    "scope_and_pool_id",
    "scopes_and_pool_ids",
    "update_scope",
]
