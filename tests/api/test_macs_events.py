"""MAC lookup, duplicates and the audit log through the API."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from tests.api.conftest import Headers


def test_mac_lookup_names_holders_and_pool(client: FlaskClient, operator: Headers) -> None:
    made = client.post(
        "/api/v1/allocations",
        json={
            "owner": {"kind": "pod", "name": "p"},
            "interface": "net1",
            "mac": "02:00:00:00:12:34",
        },
        headers=operator,
    ).json
    for form in ("02:00:00:00:12:34", "02-00-00-00-12-34", "0200.0000.1234", "020000001234"):
        info = client.get(f"/api/v1/macs/{form}", headers=operator)
        assert info.status_code == 200
        assert info.json["mac"] == "02:00:00:00:12:34"
        assert info.json["held"] is True
        assert [h["id"] for h in info.json["holders"]] == [made["id"]]
        assert info.json["pool"]["name"] == "Default"
    outside = client.get("/api/v1/macs/aa:00:00:00:00:01", headers=operator).json
    assert (outside["pool"], outside["held"]) == (None, False)
    bad = client.get("/api/v1/macs/xyz", headers=operator)
    assert (bad.status_code, bad.json["reason"]) == (422, "invalid_mac")
    assert "'xyz'" in bad.json["message"]


def test_duplicates_listed(client: FlaskClient, admin: Headers) -> None:
    empty = client.get("/api/v1/duplicates", headers=admin)
    assert (empty.status_code, empty.json) == (200, [])
    client.patch("/api/v1/pools/1", json={"allow_duplicates": True}, headers=admin)
    for name in ("a", "b"):
        client.post(
            "/api/v1/allocations",
            json={
                "owner": {"kind": "vm", "name": name},
                "interface": "n",
                "mac": "02:00:00:00:00:99",
            },
            headers=admin,
        )
    listed = client.get("/api/v1/duplicates", headers=admin)
    assert [d["mac"] for d in listed.json] == ["02:00:00:00:00:99"]
    assert sorted(h["owner"]["name"] for h in listed.json[0]["holders"]) == ["a", "b"]
    assert json.loads(listed.headers["X-Pagination"])["total"] == 1


def test_events_newest_first_with_token_actor_and_filters(
    client: FlaskClient, operator: Headers
) -> None:
    client.post(
        "/api/v1/allocations",
        json={"owner": {"kind": "vm", "name": "v"}, "interface": "n"},
        headers=operator,
    )
    events = client.get("/api/v1/events", headers=operator)
    assert events.status_code == 200
    newest = events.json[0]
    assert (newest["action"], newest["actor"]) == ("allocation.create", "token:operator")
    ids = [e["id"] for e in events.json]
    assert ids == sorted(ids, reverse=True)
    only = client.get(
        "/api/v1/events", query_string={"action": "allocation"}, headers=operator
    ).json
    assert {e["action"] for e in only} == {"allocation.create"}
    future = client.get(
        "/api/v1/events", query_string={"since": "2999-01-01T00:00:00Z"}, headers=operator
    )
    assert (future.status_code, future.json) == (200, [])
    past = client.get(
        "/api/v1/events", query_string={"until": "2000-01-01T00:00:00"}, headers=operator
    )
    assert past.json == []
    bad = client.get("/api/v1/events", query_string={"since": "yesterday"}, headers=operator)
    assert (bad.status_code, bad.json["reason"]) == (422, "validation_error")
