"""Scopes through the service layer: the tree, paths, pools by inheritance, move, delete."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InvalidScope, NameInUse, NotFound, ScopeNotEmpty
from manager.services import (
    allocate_mac,
    assign_pool,
    create_scope,
    delete_scope,
    ensure_path,
    get_default_pool,
    get_scope,
    list_scopes,
    move_scope,
    release_allocation,
    resolve_pool,
    update_scope,
)
from manager.services.scopes import scope_and_pool_id, scopes_and_pool_ids
from tests.services.conftest import PoolFactory, row_counts

R1 = "0a:00:00:00:00:00-0a:00:00:00:00:ff"


def _tree(session: Session, actor: Actor) -> None:
    create_scope(session, actor, kind="datacenter", name="dc1")
    create_scope(session, actor, kind="cluster", name="c1", parent="/dc1")
    create_scope(session, actor, kind="namespace", name="team-a", parent="/dc1/c1")
    create_scope(session, actor, kind="cluster", name="ocp")  # directly under the engine


def test_tree_and_paths(session: Session, actor: Actor) -> None:
    _tree(session, actor)
    assert [(s.path, s.kind) for s in list_scopes(session)] == [
        ("/", "engine"),
        ("/dc1", "datacenter"),
        ("/dc1/c1", "cluster"),
        ("/dc1/c1/team-a", "namespace"),
        ("/ocp", "cluster"),
    ]
    ns = get_scope(session, "/dc1/c1/team-a")
    assert get_scope(session, ns.id).path == "/dc1/c1/team-a"
    assert get_scope(session, str(ns.id)).id == ns.id


@pytest.mark.parametrize(
    ("kind", "parent"),
    [("namespace", "/"), ("namespace", "/dc1"), ("datacenter", "/dc1"), ("engine", "/")],
)
def test_wrong_parent_refused(session: Session, actor: Actor, kind: str, parent: str) -> None:
    create_scope(session, actor, kind="datacenter", name="dc1")
    before = row_counts(session)
    with pytest.raises(InvalidScope):
        create_scope(session, actor, kind=kind, name="x", parent=parent)
    assert row_counts(session) == before


def test_sibling_names_unique(session: Session, actor: Actor) -> None:
    create_scope(session, actor, kind="datacenter", name="dc1")
    with pytest.raises(NameInUse, match="/dc1"):
        create_scope(session, actor, kind="datacenter", name="dc1")


def test_effective_pool_by_inheritance(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    _tree(session, actor)
    default = get_default_pool(session)
    lab = make_pool("Lab", R1)
    resolved = resolve_pool(session, "/dc1/c1/team-a")
    assert (resolved.pool.id, resolved.source.path, resolved.inherited) == (default.id, "/", True)
    assign_pool(session, actor, "/dc1", lab.id)
    resolved = resolve_pool(session, "/dc1/c1/team-a")
    assert (resolved.pool.id, resolved.source.path, resolved.inherited) == (lab.id, "/dc1", True)
    assert resolve_pool(session, "/dc1").inherited is False
    assert resolve_pool(session, "/ocp").pool.id == default.id
    assign_pool(session, actor, "/dc1", None)
    assert resolve_pool(session, "/dc1/c1/team-a").pool.id == default.id


def test_ensure_path_creates_missing_levels(session: Session, actor: Actor) -> None:
    created = ensure_path(session, actor, "/k8s/ns1", kinds=["cluster", "namespace"])
    again = ensure_path(session, actor, "/k8s/ns1", kinds=["cluster", "namespace"])
    assert created.id == again.id and created.path == "/k8s/ns1"


def test_move_subtree_paths_follow_and_macs_stay(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    _tree(session, actor)
    lab = make_pool("Lab", R1)
    create_scope(session, actor, kind="datacenter", name="dc2", pool_id=lab.id)
    held = allocate_mac(
        session, actor, scope="/dc1/c1/team-a", owner=Owner("pod", "p"), interface="eth0"
    ).allocation
    mac = held.mac
    moved = move_scope(session, actor, "/dc1/c1", "/dc2")
    assert moved.path == "/dc2/c1"
    assert get_scope(session, "/dc2/c1/team-a").id == held.scope_id
    with pytest.raises(NotFound):
        get_scope(session, "/dc1/c1/team-a")
    session.refresh(held)
    assert held.mac == mac and held.pool_id == get_default_pool(session).id
    # Only future allocations use the new pool.
    new = allocate_mac(
        session, actor, scope="/dc2/c1/team-a", owner=Owner("pod", "q"), interface="eth0"
    ).allocation
    assert new.pool_id == lab.id
    # A cluster may also move directly under the engine, and be renamed.
    update_scope(session, actor, "/dc2/c1", parent="/", name="c1-top")
    assert get_scope(session, "/c1-top/team-a").id == held.scope_id


def test_move_under_itself_refused(session: Session, actor: Actor) -> None:
    _tree(session, actor)
    with pytest.raises(InvalidScope):
        move_scope(session, actor, "/dc1", "/dc1")
    with pytest.raises(InvalidScope):
        move_scope(session, actor, "/dc1/c1", "/dc1/c1/team-a")


def test_delete_refused_with_children_or_allocations(session: Session, actor: Actor) -> None:
    _tree(session, actor)
    with pytest.raises(ScopeNotEmpty, match="child"):
        delete_scope(session, actor, "/dc1/c1")
    result = allocate_mac(
        session, actor, scope="/dc1/c1/team-a", owner=Owner("pod", "p"), interface="eth0"
    )
    before = row_counts(session)
    with pytest.raises(ScopeNotEmpty, match="allocation"):
        delete_scope(session, actor, "/dc1/c1/team-a")
    assert row_counts(session) == before
    with pytest.raises(ScopeNotEmpty):
        delete_scope(session, actor, "/")
    release_allocation(session, actor, result.allocation.id)
    delete_scope(session, actor, "/dc1/c1/team-a")
    delete_scope(session, actor, "/dc1/c1")
    assert [s.path for s in list_scopes(session)] == ["/", "/dc1", "/ocp"]


def test_engine_cannot_change(session: Session, actor: Actor, make_pool: PoolFactory) -> None:
    lab = make_pool("Lab", R1)
    with pytest.raises(InvalidScope):
        assign_pool(session, actor, "/", lab.id)
    with pytest.raises(InvalidScope):
        update_scope(session, actor, "/", name="root")


def test_many_scopes_resolved_at_once(
    make_pool: PoolFactory, session: Session, actor: Actor
) -> None:
    """scopes_and_pool_ids answers like scope_and_pool_id for each ref, errors in their slot."""
    _tree(session, actor)
    lab = make_pool("Lab", R1)
    assign_pool(session, actor, "/dc1/c1", lab.id)
    default = get_default_pool(session)
    team = get_scope(session, "/dc1/c1/team-a")
    refs: list[object] = [team, team.id, str(team.id), "/dc1/c1/team-a/", "/ocp", "/dc1"]
    refs += ["/nowhere", 999_999, True, 1.5]
    answers = scopes_and_pool_ids(session, refs)  # type: ignore[arg-type]
    assert [a[0].path for a in answers[:6] if not isinstance(a, Exception)] == [
        "/dc1/c1/team-a",
        "/dc1/c1/team-a",
        "/dc1/c1/team-a",
        "/dc1/c1/team-a",
        "/ocp",
        "/dc1",
    ]
    assert [a[1] for a in answers[:6] if not isinstance(a, Exception)] == [
        lab.id, lab.id, lab.id, lab.id, default.id, default.id
    ]  # fmt: skip
    for ref, answer in zip(refs[:6], answers[:6], strict=True):
        single = scope_and_pool_id(session, ref)  # type: ignore[arg-type]
        assert not isinstance(answer, Exception)
        assert (answer[0].id, answer[1]) == (single[0].id, single[1])
    assert isinstance(answers[6], NotFound) and "'/nowhere'" in answers[6].message
    assert isinstance(answers[7], NotFound) and "999999" in answers[7].message
    assert isinstance(answers[8], InvalidScope) and isinstance(answers[9], InvalidScope)
    assert scopes_and_pool_ids(session, []) == []
