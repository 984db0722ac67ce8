"""Pools and ranges through the API: happy paths and every error path."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from tests.api.conftest import Headers

POOLS = "/api/v1/pools"
RANGE = {"start": "0A-00-00-00-00-00", "end": "0a00.0000.00ff"}


def create(client: FlaskClient, admin: Headers, **body: Any) -> Any:
    payload = {"name": "lab", "ranges": [RANGE], **body}
    return client.post(POOLS, json=payload, headers=admin)


def test_list_pools_paginated_with_default_first(client: FlaskClient, admin: Headers) -> None:
    create(client, admin, name="a-pool")
    answer = client.get(POOLS, headers=admin, query_string={"page_size": 1})
    assert answer.status_code == 200
    assert [p["name"] for p in answer.json] == ["Default"]
    assert json.loads(answer.headers["X-Pagination"])["total"] == 2
    page2 = client.get(POOLS, headers=admin, query_string={"page_size": 1, "page": 2})
    assert [p["name"] for p in page2.json] == ["a-pool"]


def test_page_size_is_capped(client: FlaskClient, admin: Headers) -> None:
    answer = client.get(POOLS, headers=admin, query_string={"page_size": 100000})
    assert answer.status_code == 422
    assert answer.json["reason"] == "validation_error"
    assert "page_size" in answer.json["message"]


def test_create_pool_normalizes_macs_and_reports_statistics(
    client: FlaskClient, admin: Headers
) -> None:
    answer = create(client, admin, description="lab hosts")
    assert answer.status_code == 201
    pool = answer.json
    assert pool["ranges"][0]["start"] == "0a:00:00:00:00:00"
    assert pool["ranges"][0]["end"] == "0a:00:00:00:00:ff"
    assert pool["statistics"] == {
        "size": 256,
        "allocated": 0,
        "available": 256,
        "external": 0,
        "duplicates": 0,
    }
    fetched = client.get(f"{POOLS}/{pool['id']}", headers=admin)
    assert fetched.status_code == 200
    assert fetched.json == pool


def test_create_pool_name_in_use(client: FlaskClient, admin: Headers) -> None:
    create(client, admin)
    answer = create(
        client,
        admin,
        name="LAB",
        ranges=[{"start": "0c:00:00:00:00:00", "end": "0c:00:00:00:00:01"}],
    )
    assert answer.status_code == 409
    assert answer.json["reason"] == "name_in_use"
    assert "lab" in answer.json["message"]
    assert answer.json["errors"]["field"] == "name"


def test_create_pool_range_overlap_names_the_other_pool(
    client: FlaskClient, admin: Headers
) -> None:
    answer = create(
        client, admin, ranges=[{"start": "02:00:00:00:10:00", "end": "02:00:00:00:10:ff"}]
    )
    assert answer.status_code == 409
    assert answer.json["reason"] == "range_overlap"
    assert "Default" in answer.json["message"]
    assert answer.json["errors"]["conflicts"][0]["pool"] == "Default"


def test_create_pool_invalid_range_and_mac(client: FlaskClient, admin: Headers) -> None:
    reversed_range = create(
        client, admin, ranges=[{"start": "0a:00:00:00:00:ff", "end": "0a:00:00:00:00:00"}]
    )
    assert reversed_range.status_code == 422
    assert reversed_range.json["reason"] == "invalid_range"
    bad_mac = create(
        client, admin, ranges=[{"start": "0a:00:00:00:00", "end": "0a:00:00:00:00:01"}]
    )
    assert bad_mac.status_code == 422
    assert "0a:00:00:00:00" in bad_mac.json["message"]
    multicast = create(
        client, admin, ranges=[{"start": "01:00:00:00:00:00", "end": "01:00:00:00:00:05"}]
    )
    assert multicast.status_code == 422
    assert multicast.json["reason"] == "invalid_range"
    # A range written as a string (the CLI's form) is told the API's form, by its path.
    as_text = create(client, admin, ranges=["0a:00:00:00:00:00-0a:00:00:00:00:ff"])
    assert as_text.status_code == 422
    assert as_text.json["message"] == (
        "The request is not valid: json field 'ranges.0': "
        'A range is an object: {"start": "<MAC>", "end": "<MAC>"}.'
    )


def test_create_pool_validation_errors(client: FlaskClient, admin: Headers) -> None:
    missing = client.post(POOLS, json={"name": "x"}, headers=admin)
    assert missing.status_code == 422
    assert missing.json["reason"] == "validation_error"
    assert missing.json["errors"]["json"]["ranges"] == ["Missing data for required field."]
    unknown = create(client, admin, colour="blue")
    assert unknown.status_code == 422
    assert "colour" in unknown.json["message"]
    not_json = client.post(POOLS, data="name=x", headers=admin)
    assert not_json.status_code == 422
    assert "JSON request body is required" in not_json.json["message"]
    broken = client.post(POOLS, data="{", headers={**admin, "Content-Type": "application/json"})
    assert broken.status_code == 400
    assert broken.json["reason"] == "bad_request"


def test_patch_pool(client: FlaskClient, admin: Headers) -> None:
    pool = create(client, admin).json
    answer = client.patch(
        f"{POOLS}/{pool['id']}",
        json={
            "name": "lab2",
            "allow_duplicates": True,
            "ranges": [{"start": "0a:00:00:00:00:00", "end": "0a:00:00:00:00:0f"}],
        },
        headers=admin,
    )
    assert answer.status_code == 200
    assert answer.json["name"] == "lab2"
    assert answer.json["allow_duplicates"] is True
    assert answer.json["statistics"]["size"] == 16


def test_patch_pool_errors(client: FlaskClient, admin: Headers) -> None:
    assert (
        client.patch(f"{POOLS}/999", json={"name": "x"}, headers=admin).json["reason"]
        == "not_found"
    )
    pool = create(client, admin).json
    taken = client.patch(f"{POOLS}/{pool['id']}", json={"name": "default"}, headers=admin)
    assert (taken.status_code, taken.json["reason"]) == (409, "name_in_use")
    empty = client.patch(f"{POOLS}/{pool['id']}", json={"ranges": []}, headers=admin)
    assert empty.status_code == 422


def test_delete_pool(client: FlaskClient, admin: Headers) -> None:
    pool = create(client, admin).json
    assert client.delete(f"{POOLS}/{pool['id']}", headers=admin).status_code == 204
    gone = client.get(f"{POOLS}/{pool['id']}", headers=admin)
    assert gone.status_code == 404
    assert gone.json["reason"] == "not_found"
    assert f"Pool {pool['id']} does not exist" in gone.json["message"]


def test_delete_pool_refusals(client: FlaskClient, admin: Headers) -> None:
    default = client.get(POOLS, headers=admin).json[0]
    refused = client.delete(f"{POOLS}/{default['id']}", headers=admin)
    assert (refused.status_code, refused.json["reason"]) == (409, "pool_in_use")
    assert "default pool" in refused.json["message"]
    pool = create(client, admin).json
    client.post(
        "/api/v1/scopes",
        json={"kind": "datacenter", "name": "dc1", "pool_id": pool["id"]},
        headers=admin,
    )
    assigned = client.delete(f"{POOLS}/{pool['id']}", headers=admin)
    assert (assigned.status_code, assigned.json["reason"]) == (409, "pool_in_use")
    assert "/dc1" in assigned.json["message"]


def test_add_and_remove_range(client: FlaskClient, admin: Headers) -> None:
    pool = create(client, admin).json
    url = f"{POOLS}/{pool['id']}/ranges"
    added = client.post(url, json={"start": "0e0000000000", "end": "0e00000000ff"}, headers=admin)
    assert added.status_code == 201, added.json
    assert added.json == {
        "id": added.json["id"],
        "start": "0e:00:00:00:00:00",
        "end": "0e:00:00:00:00:ff",
        "size": 256,
    }
    assert len(client.get(f"{POOLS}/{pool['id']}", headers=admin).json["ranges"]) == 2
    removed = client.delete(f"{url}/{added.json['id']}", headers=admin)
    assert removed.status_code == 204
    assert len(client.get(f"{POOLS}/{pool['id']}", headers=admin).json["ranges"]) == 1


def test_range_errors(client: FlaskClient, admin: Headers) -> None:
    pool = create(client, admin).json
    url = f"{POOLS}/{pool['id']}/ranges"
    overlap = client.post(
        url, json={"start": "02:00:00:00:00:00", "end": "02:00:00:00:00:01"}, headers=admin
    )
    assert (overlap.status_code, overlap.json["reason"]) == (409, "range_overlap")
    last = client.delete(f"{url}/{pool['ranges'][0]['id']}", headers=admin)
    assert (last.status_code, last.json["reason"]) == (422, "invalid_range")
    assert "last range" in last.json["message"]
    missing = client.delete(f"{url}/999", headers=admin)
    assert (missing.status_code, missing.json["reason"]) == (404, "not_found")
    no_pool = client.post(f"{POOLS}/999/ranges", json=RANGE, headers=admin)
    assert (no_pool.status_code, no_pool.json["reason"]) == (404, "not_found")


def test_turning_duplicates_off_is_refused_while_duplicates_exist(
    client: FlaskClient, admin: Headers
) -> None:
    pool = create(client, admin, allow_duplicates=True).json
    client.post(
        "/api/v1/scopes",
        json={"kind": "datacenter", "name": "dc", "pool_id": pool["id"]},
        headers=admin,
    )
    for name in ("a", "b"):
        made = client.post(
            "/api/v1/allocations",
            json={
                "scope": "/dc",
                "owner": {"kind": "vm", "name": name},
                "interface": "nic1",
                "mac": "0a:00:00:00:00:07",
            },
            headers=admin,
        )
        assert made.status_code == 201
    refused = client.patch(f"{POOLS}/{pool['id']}", json={"allow_duplicates": False}, headers=admin)
    assert (refused.status_code, refused.json["reason"]) == (409, "duplicates_exist")
    assert refused.json["errors"]["macs"] == ["0a:00:00:00:00:07"]
