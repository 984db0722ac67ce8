"""Allocations through the API (on SQLite and PostgreSQL): allocate, idempotency, confirm,
release, search, and every refusal."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from tests.api.conftest import Headers

ALLOCATIONS = "/api/v1/allocations"


def allocate(client: FlaskClient, headers: Headers, name: str = "vm1", **body: Any) -> Any:
    payload = {"owner": {"kind": "vm", "name": name}, "interface": "nic1", **body}
    return client.post(ALLOCATIONS, json=payload, headers=headers)


def test_auto_allocation_then_idempotent_repeat(client: FlaskClient, operator: Headers) -> None:
    first = allocate(client, operator)
    assert first.status_code == 201
    body = first.json
    assert body["mac"].startswith("02:00:00:")
    assert body["state"] == "allocated"
    assert (body["scope"], body["pool"], body["in_range"]) == ("/", "Default", True)
    again = allocate(client, operator)
    assert again.status_code == 200
    assert again.json["id"] == body["id"]
    assert again.json["mac"] == body["mac"]
    other = allocate(client, operator, name="vm2")
    assert other.status_code == 201
    assert other.json["mac"] != body["mac"]


def test_timestamps_read_the_same_when_written_and_when_read_back(
    client: FlaskClient, operator: Headers
) -> None:
    # SQLite keeps no time zone: the repeat (read from the database) used to lose "+00:00".
    first = allocate(client, operator, ttl_seconds=60)
    again = allocate(client, operator, ttl_seconds=60)
    listed = client.get(f"{ALLOCATIONS}/{first.json['id']}", headers=operator)
    assert listed.status_code == 200
    for key in ("created_at", "expires_at"):
        assert first.json[key].endswith("+00:00")
        assert again.json[key] == first.json[key] == listed.json[key]


def test_requested_mac_any_form_and_conflicts(client: FlaskClient, operator: Headers) -> None:
    made = allocate(client, operator, mac="0200.0000.AB01")
    assert made.status_code == 201
    assert made.json["mac"] == "02:00:00:00:ab:01"
    taken = allocate(client, operator, name="vm2", mac="02-00-00-00-AB-01")
    assert (taken.status_code, taken.json["reason"]) == (409, "mac_in_use")
    assert "vm 'vm1'" in taken.json["message"]
    assert taken.json["errors"]["holders"][0]["owner_name"] == "vm1"
    other_mac = allocate(client, operator, mac="02:00:00:00:ab:02")
    assert (other_mac.status_code, other_mac.json["reason"]) == (409, "interface_in_use")
    outside = allocate(client, operator, name="vm3", mac="aa:00:00:00:00:01")
    assert (outside.status_code, outside.json["in_range"]) == (201, False)


def test_invalid_macs_are_named(client: FlaskClient, operator: Headers) -> None:
    malformed = allocate(client, operator, mac="02:00:00:00:00")
    assert (malformed.status_code, malformed.json["reason"]) == (422, "invalid_mac")
    assert "02:00:00:00:00" in malformed.json["message"]
    multicast = allocate(client, operator, mac="01:00:5e:00:00:01")
    assert (multicast.status_code, multicast.json["reason"]) == (422, "invalid_mac")
    assert "01:00:5e:00:00:01" in multicast.json["message"]
    zero = allocate(client, operator, mac="000000000000")
    assert (zero.status_code, zero.json["reason"]) == (422, "invalid_mac")


def test_pending_confirm_and_release(client: FlaskClient, operator: Headers) -> None:
    pending = allocate(client, operator, ttl_seconds=60)
    assert pending.status_code == 201
    assert pending.json["state"] == "pending"
    assert pending.json["expires_at"] is not None
    url = f"{ALLOCATIONS}/{pending.json['id']}"
    confirmed = client.post(f"{url}/confirm", headers=operator)
    assert confirmed.status_code == 200
    assert (confirmed.json["state"], confirmed.json["expires_at"]) == ("allocated", None)
    assert client.get(url, headers=operator).json["state"] == "allocated"
    assert client.delete(url, headers=operator).status_code == 204
    assert client.get(url, headers=operator).json["reason"] == "not_found"
    mac = pending.json["mac"]
    info = client.get(f"/api/v1/macs/{mac}", headers=operator).json
    assert (info["held"], info["holders"]) == (False, [])


def test_allocation_errors(client: FlaskClient, operator: Headers) -> None:
    reserved = allocate(client, operator, state="reserved")
    refused = client.post(f"{ALLOCATIONS}/{reserved.json['id']}/confirm", headers=operator)
    assert (refused.status_code, refused.json["reason"]) == (409, "invalid_state")
    assert "reserved" in refused.json["message"]
    for method in (client.get, client.delete):
        missing = method(f"{ALLOCATIONS}/999", headers=operator)
        assert (missing.status_code, missing.json["reason"]) == (404, "not_found")
    confirm_missing = client.post(f"{ALLOCATIONS}/999/confirm", headers=operator)
    assert confirm_missing.status_code == 404
    no_scope = allocate(client, operator, scope="/nowhere")
    assert (no_scope.status_code, no_scope.json["reason"]) == (404, "not_found")
    assert "/nowhere" in no_scope.json["message"]
    both = allocate(client, operator, scope="/", scope_id=1)
    assert (both.status_code, both.json["reason"]) == (422, "invalid_scope")
    ttl = allocate(client, operator, ttl_seconds=0)
    assert (ttl.status_code, ttl.json["reason"]) == (422, "validation_error")
    no_owner = client.post(ALLOCATIONS, json={"interface": "x"}, headers=operator)
    assert no_owner.json["errors"]["json"]["owner"] == ["Missing data for required field."]


def test_pool_exhausted(client: FlaskClient, admin: Headers) -> None:
    pool = client.post(
        "/api/v1/pools",
        json={
            "name": "tiny",
            "ranges": [{"start": "0a:00:00:00:00:00", "end": "0a:00:00:00:00:01"}],
        },
        headers=admin,
    ).json
    client.post(
        "/api/v1/scopes",
        json={"kind": "datacenter", "name": "dc", "pool_id": pool["id"]},
        headers=admin,
    )
    for name in ("a", "b"):
        assert allocate(client, admin, name=name, scope="/dc").status_code == 201
    full = allocate(client, admin, name="c", scope="/dc")
    assert (full.status_code, full.json["reason"]) == (409, "pool_exhausted")
    assert "tiny" in full.json["message"]


def test_search_filters_and_pagination(client: FlaskClient, operator: Headers) -> None:
    first = allocate(client, operator, name="a").json
    allocate(client, operator, name="b", ttl_seconds=30)
    allocate(client, operator, name="c")
    by_mac = client.get(
        ALLOCATIONS, query_string={"mac": first["mac"].upper().replace(":", "")}, headers=operator
    )
    assert [a["id"] for a in by_mac.json] == [first["id"]]
    pending = client.get(ALLOCATIONS, query_string={"state": "pending"}, headers=operator).json
    assert [a["owner"]["name"] for a in pending] == ["b"]
    named = client.get(
        ALLOCATIONS, query_string={"owner_kind": "vm", "owner_name": "c"}, headers=operator
    ).json
    assert [a["owner"]["name"] for a in named] == ["c"]
    in_pool = client.get(
        ALLOCATIONS,
        query_string={"pool_id": first["pool_id"], "scope_id": first["scope_id"]},
        headers=operator,
    )
    assert len(in_pool.json) == 3
    page = client.get(ALLOCATIONS, query_string={"page_size": 2, "page": 2}, headers=operator)
    assert len(page.json) == 1
    assert json.loads(page.headers["X-Pagination"])["total"] == 3
    macs = [a["mac"] for a in in_pool.json]
    assert macs == sorted(macs)
    bad_state = client.get(ALLOCATIONS, query_string={"state": "gone"}, headers=operator)
    assert bad_state.status_code == 422
    bad_mac = client.get(ALLOCATIONS, query_string={"mac": "nope"}, headers=operator)
    assert (bad_mac.status_code, bad_mac.json["reason"]) == (422, "invalid_mac")


def test_search_by_scope_path(client: FlaskClient, admin: Headers) -> None:
    """The scope is found by path as POST takes it; an unknown path is an error, not a filter
    that silently matches everything."""
    client.post("/api/v1/scopes", json={"kind": "datacenter", "name": "dc"}, headers=admin)
    allocate(client, admin, name="at-engine")
    allocate(client, admin, name="in-dc", scope="/dc")
    in_dc = client.get(ALLOCATIONS, query_string={"scope": "/dc"}, headers=admin)
    assert [a["owner"]["name"] for a in in_dc.json] == ["in-dc"]
    unknown = client.get(ALLOCATIONS, query_string={"scope": "/nowhere"}, headers=admin)
    assert unknown.status_code == 404
    both = client.get(ALLOCATIONS, query_string={"scope": "/dc", "scope_id": 1}, headers=admin)
    assert both.status_code in (400, 422)
    assert "not both" in both.json["message"]
