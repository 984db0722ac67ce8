"""Scopes through the API: tree, paths, pool assignment and inheritance, refusals."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.api.conftest import Headers

SCOPES = "/api/v1/scopes"


def make(client: FlaskClient, admin: Headers, **body: Any) -> Any:
    return client.post(SCOPES, json=body, headers=admin)


def test_create_by_parent_path_and_lookup_by_path(client: FlaskClient, admin: Headers) -> None:
    dc = make(client, admin, kind="datacenter", name="dc1")
    assert dc.status_code == 201
    cluster = make(client, admin, kind="cluster", name="c1", parent="/dc1")
    assert cluster.status_code == 201
    assert cluster.json["path"] == "/dc1/c1"
    assert cluster.json["parent_id"] == dc.json["id"]
    by_id = make(client, admin, kind="cluster", name="c2", parent_id=dc.json["id"])
    assert by_id.json["path"] == "/dc1/c2"
    found = client.get(SCOPES, query_string={"path": "/dc1/c1"}, headers=admin)
    assert found.status_code == 200
    assert [s["id"] for s in found.json] == [cluster.json["id"]]
    nothing = client.get(SCOPES, query_string={"path": "/nope"}, headers=admin)
    assert (nothing.status_code, nothing.json) == (200, [])
    listed = client.get(SCOPES, headers=admin).json
    assert [s["path"] for s in listed] == ["/", "/dc1", "/dc1/c1", "/dc1/c2"]


def test_effective_pool_is_inherited_until_assigned(client: FlaskClient, admin: Headers) -> None:
    default_id = client.get("/api/v1/pools", headers=admin).json[0]["id"]
    make(client, admin, kind="datacenter", name="dc1")
    cluster = make(client, admin, kind="cluster", name="c1", parent="/dc1").json
    assert cluster["pool_id"] is None
    assert cluster["effective_pool_id"] == default_id
    assert cluster["inherited_from"] == "/"
    pool = client.post(
        "/api/v1/pools",
        json={"name": "p", "ranges": [{"start": "0a:00:00:00:00:00", "end": "0a:00:00:00:00:ff"}]},
        headers=admin,
    ).json
    dc_id = cluster["parent_id"]
    assigned = client.patch(f"{SCOPES}/{dc_id}", json={"pool_id": pool["id"]}, headers=admin)
    assert assigned.json["pool_id"] == pool["id"]
    child = client.get(f"{SCOPES}/{cluster['id']}", headers=admin).json
    assert (child["effective_pool_id"], child["inherited_from"]) == (pool["id"], "/dc1")
    cleared = client.patch(f"{SCOPES}/{dc_id}", json={"pool_id": None}, headers=admin)
    assert cleared.json["effective_pool_id"] == default_id


def test_rename_and_move(client: FlaskClient, admin: Headers) -> None:
    make(client, admin, kind="datacenter", name="dc1")
    make(client, admin, kind="datacenter", name="dc2")
    cluster = make(client, admin, kind="cluster", name="c1", parent="/dc1").json
    moved = client.patch(
        f"{SCOPES}/{cluster['id']}", json={"parent": "/dc2", "name": "east"}, headers=admin
    )
    assert moved.status_code == 200
    assert moved.json["path"] == "/dc2/east"


def test_scope_errors(client: FlaskClient, admin: Headers) -> None:
    make(client, admin, kind="datacenter", name="dc1")
    twin = make(client, admin, kind="datacenter", name="dc1")
    assert (twin.status_code, twin.json["reason"]) == (409, "name_in_use")
    assert "/dc1" in twin.json["message"]
    no_parent = make(client, admin, kind="cluster", name="c", parent="/missing")
    assert (no_parent.status_code, no_parent.json["reason"]) == (404, "not_found")
    bad_parent = make(client, admin, kind="datacenter", name="x", parent="/dc1")
    assert (bad_parent.status_code, bad_parent.json["reason"]) == (422, "invalid_scope")
    both = make(client, admin, kind="cluster", name="c", parent="/dc1", parent_id=1)
    assert (both.status_code, both.json["reason"]) == (422, "invalid_scope")
    slash = make(client, admin, kind="cluster", name="a/b", parent="/dc1")
    assert slash.status_code == 422
    bad_kind = make(client, admin, kind="engine", name="e")
    assert (bad_kind.status_code, bad_kind.json["reason"]) == (422, "validation_error")
    no_pool = make(client, admin, kind="datacenter", name="dc9", pool_id=999)
    assert (no_pool.status_code, no_pool.json["reason"]) == (404, "not_found")
    relative = client.get(SCOPES, query_string={"path": "dc1"}, headers=admin)
    assert relative.status_code == 422
    assert client.get(f"{SCOPES}/999", headers=admin).json["reason"] == "not_found"


def test_delete_scope_and_refusals(client: FlaskClient, admin: Headers) -> None:
    dc = make(client, admin, kind="datacenter", name="dc1").json
    cluster = make(client, admin, kind="cluster", name="c1", parent="/dc1").json
    with_child = client.delete(f"{SCOPES}/{dc['id']}", headers=admin)
    assert (with_child.status_code, with_child.json["reason"]) == (409, "scope_not_empty")
    assert "child" in with_child.json["message"]
    client.post(
        "/api/v1/allocations",
        json={"scope_id": cluster["id"], "owner": {"kind": "vm", "name": "v"}, "interface": "n"},
        headers=admin,
    )
    holding = client.delete(f"{SCOPES}/{cluster['id']}", headers=admin)
    assert (holding.status_code, holding.json["reason"]) == (409, "scope_not_empty")
    engine = client.get(SCOPES, query_string={"path": "/"}, headers=admin).json[0]
    root = client.delete(f"{SCOPES}/{engine['id']}", headers=admin)
    assert root.status_code == 409
    empty = make(client, admin, kind="datacenter", name="dc2").json
    assert client.delete(f"{SCOPES}/{empty['id']}", headers=admin).status_code == 204
    assert client.get(f"{SCOPES}/{empty['id']}", headers=admin).status_code == 404
