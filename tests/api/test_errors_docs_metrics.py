"""The error shape and table, limits, the OpenAPI document, the offline docs page, /metrics."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

import manager.api.pools as pool_views
from manager.api.errors import REASON_BY_STATUS, STATUS_BY_FAMILY
from manager.api.fields import NO_NUL_PATTERN
from manager.core import MAC_PATTERN
from manager.core.errors import Conflict, DatabaseUnavailable, InvalidInput, MacPoolError, NotFound
from manager.core.mac import ASSIGNABLE_MAC_PATTERN
from manager.services import status_of
from tests.api.conftest import Headers

SHAPE = {"code", "status", "message", "reason", "errors"}


def _leaves(cls: type[MacPoolError]) -> list[type[MacPoolError]]:
    """The core's error tree (plugins' subclasses depend on what a test run imported)."""
    below = (sub for child in cls.__subclasses__() for sub in _leaves(child))
    return [cls, *(sub for sub in below if sub.__module__ == "manager.core.errors")]


@pytest.mark.parametrize("error", _leaves(MacPoolError)[1:], ids=lambda c: c.__name__)
def test_every_domain_error_maps_through_its_family(error: type[MacPoolError]) -> None:
    family = next(f for f in (NotFound, InvalidInput, Conflict) if issubclass(error, f))
    assert status_of(error("x")) == STATUS_BY_FAMILY[family]


def test_database_outage_is_503_with_retry_after(
    client: FlaskClient, admin: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise DatabaseUnavailable("connection to 10.0.0.7 port 5432 refused")

    monkeypatch.setattr(pool_views, "list_pools", unavailable)
    answer = client.get("/api/v1/pools", headers=admin)
    assert answer.status_code == 503
    assert set(answer.json) == SHAPE
    assert answer.json["reason"] == "database_unavailable"
    assert "cannot reach its database" in answer.json["message"]
    assert int(answer.headers["Retry-After"]) > 0
    assert "10.0.0.7" not in answer.get_data(as_text=True)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/allocations"),
        ("POST", "/api/v1/pools"),
        ("PATCH", "/api/v1/pools/1"),
        ("POST", "/api/v1/scopes"),
    ],
)
def test_deeply_nested_json_is_400(
    client: FlaskClient, admin: Headers, method: str, path: str, depth: int
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    for body in (
        "[" * depth + "]" * depth,
        '{"owner": ' + '{"a": ' * depth + "1" + "}" * (depth + 1),
    ):
        answer = client.open(path, method=method, data=body, headers=headers)
        assert answer.status_code == 400, answer.json
        assert answer.json["reason"] == "bad_request"


def test_unknown_path_and_method(client: FlaskClient, viewer: Headers) -> None:
    missing = client.get("/api/v1/nothing", headers=viewer)
    assert missing.status_code == 404
    assert set(missing.json) == SHAPE
    assert missing.json["reason"] == "not_found"
    assert "/api/docs" in missing.json["message"]
    wrong = client.put("/api/v1/pools", headers=viewer)
    assert wrong.status_code == 405
    assert set(wrong.json) == SHAPE
    assert wrong.json["reason"] == "method_not_allowed"
    assert {"GET", "POST"} <= set(wrong.headers["Allow"].split(", "))
    assert "PUT" in wrong.json["message"]


def test_oversized_body_is_413(app: Flask, client: FlaskClient, admin: Headers) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = '{"name": "' + "x" * limit + '"}'
    answer = client.post(
        "/api/v1/pools", data=body, headers={**admin, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json["reason"] == "payload_too_large"
    assert str(limit) in answer.json["message"]


def test_unexpected_error_is_500_without_internals(
    client: FlaskClient, admin: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(pool_views, "list_pools", explode)
    answer = client.get("/api/v1/pools", headers=admin)
    assert answer.status_code == 500
    assert set(answer.json) == SHAPE
    assert answer.json["reason"] == REASON_BY_STATUS[500]
    assert "hunter2" not in answer.get_data(as_text=True)


def test_non_api_paths_keep_flask_errors(client: FlaskClient) -> None:
    answer = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert answer.status_code == 404
    assert answer.json is None or "reason" not in answer.json


def test_openapi_document(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert set(doc["components"]["schemas"]["Error"]["properties"]) == SHAPE
    paths = doc["paths"]
    operations = [
        (p, m, op) for p, item in paths.items() for m, op in item.items() if m != "parameters"
    ]
    assert len(operations) == 22
    for path, method, op in operations:
        assert op["security"] == [{"bearerAuth": []}], (path, method)
        assert {"401", "403", "503"} <= set(op["responses"]), (path, method)
    allocate = paths["/api/v1/allocations"]["post"]["responses"]
    assert {"200", "201", "404", "409", "422"} <= set(allocate)
    schemas = doc["components"]["schemas"]
    request_mac = schemas["AllocationRequest"]["properties"]["mac"]
    assert request_mac["pattern"] == ASSIGNABLE_MAC_PATTERN
    assert schemas["Range"]["properties"]["start"]["pattern"] == ASSIGNABLE_MAC_PATTERN
    assert schemas["Owner"]["properties"]["kind"]["pattern"] == NO_NUL_PATTERN
    assert schemas["ScopeCreate"]["not"] == {"anyOf": [{"required": ["parent", "parent_id"]}]}
    assert schemas["AllocationRequest"]["not"] == {"anyOf": [{"required": ["scope", "scope_id"]}]}
    # X-Pagination is sent as JSON text, and documented so.
    pagination = doc["components"]["headers"]["PaginationJSON"]
    assert pagination["schema"]["type"] == "string"
    listed = paths["/api/v1/pools"]["get"]["responses"]["200"]["headers"]["X-Pagination"]
    assert listed == {"$ref": "#/components/headers/PaginationJSON"}
    mac_param = paths["/api/v1/macs/{mac}"]["parameters"][0]
    assert mac_param["schema"]["pattern"] == MAC_PATTERN


def test_docs_page_and_assets_are_served_locally(client: FlaskClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html
    assert "https://" not in html
    assert "/api/openapi.json" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert f"/api/docs/assets/{asset}" in html
        served = client.get(f"/api/docs/assets/{asset}")
        assert served.status_code == 200, asset
        assert len(served.data) > 1000
        served.close()
    assert client.get("/api/docs/assets/../../etc/passwd").status_code == 404


def _sample(text: str, name: str) -> float:
    """The value of the sample named exactly ``name`` (labels included), 0 when absent."""
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics(client: FlaskClient, operator: Headers) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    body = {"owner": {"kind": "vm", "name": "m"}, "interface": "n"}
    made = client.post("/api/v1/allocations", json=body, headers=operator)
    client.post("/api/v1/allocations", json=body, headers=operator)
    client.post(
        "/api/v1/allocations",
        json={**body, "interface": "x", "mac": "01:00:00:00:00:00"},
        headers=operator,
    )
    client.delete(f"/api/v1/allocations/{made.json['id']}", headers=operator)
    client.post("/api/v1/allocations", json=body, headers=operator)
    after = client.get("/metrics")
    assert after.status_code == 200
    assert after.content_type.startswith("text/plain")
    text = after.get_data(as_text=True)

    def delta(name: str) -> float:
        return _sample(text, name) - _sample(before, name)

    assert delta('macpool_api_allocations_total{result="created"}') == 2
    assert delta('macpool_api_allocations_total{result="existing"}') == 1
    assert delta('macpool_api_allocations_total{result="invalid_mac"}') == 1
    assert delta('macpool_api_releases_total{result="released"}') == 1
    assert delta("macpool_api_allocation_seconds_count") == 4
    assert 'macpool_pool_size{pool="Default",pool_id="1"} 1.6777216e+07' in text
    assert 'macpool_pool_allocated{pool="Default",pool_id="1"} 1.0' in text
    assert 'macpool_pool_available{pool="Default",pool_id="1"} 1.6777215e+07' in text
