"""Scope pages through the Flask client: tree, create, assign/clear, move, delete."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from manager.core.actor import Actor, Owner
from manager.db import Scope
from manager.services import allocate_mac, create_pool, get_scope
from tests.ui.conftest import event_count, post


def scope_at(app: Flask, path: str) -> Scope | None:
    from manager.core.errors import NotFound
    from manager.web import database

    with app.app_context(), database().session() as s:
        try:
            return get_scope(s, path)
        except NotFound:
            return None


def make_pool(app: Flask, name: str = "east") -> int:
    from manager.web import database

    with app.app_context(), database().session(write=True) as s:
        return create_pool(
            s, Actor("t"), name=name, ranges=["0a:00:00:00:00:00-0a:00:00:00:ff:ff"]
        ).id


def new_scope(client: FlaskClient, kind: str, name: str, parent: str = "/", pool: str = ""):
    return post(client, "/scopes/new", {"kind": kind, "name": name, "parent": parent, "pool": pool})


def test_tree_shows_assigned_and_inherited_pools(app: Flask, admin: FlaskClient) -> None:
    pool_id = make_pool(app)
    assert new_scope(admin, "datacenter", "dc1", pool=str(pool_id)).status_code == 302
    assert new_scope(admin, "cluster", "c1", parent="/dc1").status_code == 302
    assert new_scope(admin, "namespace", "team-a", parent="/dc1/c1").status_code == 302
    page = admin.get("/scopes").get_data(as_text=True)
    assert '<strong class="assigned">east</strong>' in page
    assert "inherited from /dc1</span>" in page
    detail = admin.get(f"/scopes/{scope_at(app, '/dc1/c1/team-a').id}").get_data(as_text=True)
    assert "inherited from" in detail and ">/dc1</a>" in detail


def test_create_errors_stay_next_to_their_field(app: Flask, admin: FlaskClient) -> None:
    before = event_count(app)
    bad_parent = new_scope(admin, "namespace", "ns", parent="/")
    assert bad_parent.status_code == 422
    page = bad_parent.get_data(as_text=True)
    assert 'id="parent-error"' in page and 'value="ns"' in page
    bad_name = new_scope(admin, "datacenter", "a/b")
    assert bad_name.status_code == 422 and 'id="name-error"' in bad_name.get_data(as_text=True)
    new_scope(admin, "datacenter", "dc1")
    taken = new_scope(admin, "datacenter", "dc1")
    assert taken.status_code == 409 and "already exists" in taken.get_data(as_text=True)
    bad_pool = new_scope(admin, "datacenter", "dc2", pool="abc")
    assert bad_pool.status_code == 422 and 'id="pool-error"' in bad_pool.get_data(as_text=True)
    assert event_count(app) == before + 1


def test_assign_change_and_clear_a_pool(app: Flask, admin: FlaskClient) -> None:
    pool_id = make_pool(app)
    new_scope(admin, "datacenter", "dc1")
    scope_id = scope_at(app, "/dc1").id
    assert post(admin, f"/scopes/{scope_id}/pool", {"pool": str(pool_id)}).status_code == 302
    assert scope_at(app, "/dc1").pool_id == pool_id
    assert post(admin, f"/scopes/{scope_id}/pool", {"pool": ""}).status_code == 302
    assert scope_at(app, "/dc1").pool_id is None
    missing = post(admin, f"/scopes/{scope_id}/pool", {"pool": "999"})
    assert missing.status_code == 404 and "Pool 999 does not exist." in missing.get_data(
        as_text=True
    )


def test_engine_pool_cannot_be_changed(app: Flask, admin: FlaskClient) -> None:
    pool_id = make_pool(app)
    refused = post(admin, "/scopes/1/pool", {"pool": str(pool_id)})
    assert refused.status_code == 422 and "engine scope is the root" in refused.get_data(
        as_text=True
    )


def test_move_keeps_subtree(app: Flask, admin: FlaskClient) -> None:
    new_scope(admin, "datacenter", "dc1")
    new_scope(admin, "datacenter", "dc2")
    new_scope(admin, "cluster", "c1", parent="/dc1")
    new_scope(admin, "namespace", "ns", parent="/dc1/c1")
    cluster = scope_at(app, "/dc1/c1").id
    assert post(admin, f"/scopes/{cluster}/move", {"parent": "/dc2"}).status_code == 302
    assert scope_at(app, "/dc2/c1/ns") is not None
    refused = post(admin, f"/scopes/{cluster}/move", {"parent": "/dc2/c1/ns"})
    assert refused.status_code == 422 and 'id="parent-error"' in refused.get_data(as_text=True)


def test_delete_needs_confirmation_and_refuses_non_empty(app: Flask, admin: FlaskClient) -> None:
    from manager.web import database

    new_scope(admin, "datacenter", "dc1")
    new_scope(admin, "cluster", "c1", parent="/dc1")
    dc = scope_at(app, "/dc1").id
    assert "Do you really want to delete scope /dc1" in admin.get(f"/scopes/{dc}/delete").get_data(
        as_text=True
    )
    refused = post(admin, f"/scopes/{dc}/delete")
    assert refused.status_code == 409 and "child scope" in refused.get_data(as_text=True)
    cluster = scope_at(app, "/dc1/c1").id
    with app.app_context(), database().session(write=True) as s:
        allocate_mac(s, Actor("t"), scope=cluster, owner=Owner("vm", "v"), interface="e")
    held = post(admin, f"/scopes/{cluster}/delete")
    assert held.status_code == 409 and "allocation" in held.get_data(as_text=True)
    engine = post(admin, "/scopes/1/delete")
    assert engine.status_code == 409


def test_delete_empty_scope(app: Flask, admin: FlaskClient) -> None:
    new_scope(admin, "datacenter", "dc1")
    assert post(admin, f"/scopes/{scope_at(app, '/dc1').id}/delete").status_code == 302
    assert scope_at(app, "/dc1") is None


def test_missing_scope_is_404(admin: FlaskClient) -> None:
    assert admin.get("/scopes/999").status_code == 404
