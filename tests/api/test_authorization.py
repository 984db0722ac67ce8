"""Every endpoint × {no token, bad token, viewer, operator, admin}: who may do what.

A refused write must leave the database exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from manager.services.auth import ROLES, role_allows
from manager.web import state
from tests.api.conftest import Headers, make_app, make_tokens, prepare_database, snapshot_of

RANGE = {"start": "0a:00:00:00:00:00", "end": "0a:00:00:00:00:ff"}
OWNER = {"owner": {"kind": "vm", "name": "m"}, "interface": "n"}

#: (method, path, JSON body, the weakest role allowed). Ids 1 exist after the setup below.
MATRIX: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/v1/pools", None, "viewer"),
    (
        "POST",
        "/api/v1/pools",
        {"name": "new", "ranges": [{"start": "0c:00:00:00:00:00", "end": "0c:00:00:00:00:01"}]},
        "admin",
    ),
    ("GET", "/api/v1/pools/1", None, "viewer"),
    ("PATCH", "/api/v1/pools/1", {"description": "changed"}, "admin"),
    ("DELETE", "/api/v1/pools/2", None, "admin"),
    (
        "POST",
        "/api/v1/pools/1/ranges",
        {"start": "0e:00:00:00:00:00", "end": "0e:00:00:00:00:01"},
        "admin",
    ),
    ("DELETE", "/api/v1/pools/2/ranges/3", None, "admin"),
    ("GET", "/api/v1/scopes", None, "viewer"),
    ("POST", "/api/v1/scopes", {"kind": "datacenter", "name": "dc9"}, "admin"),
    ("GET", "/api/v1/scopes/2", None, "viewer"),
    ("PATCH", "/api/v1/scopes/2", {"description": "changed"}, "admin"),
    ("DELETE", "/api/v1/scopes/2", None, "admin"),
    ("GET", "/api/v1/allocations", None, "viewer"),
    (
        "POST",
        "/api/v1/allocations",
        {"owner": {"kind": "vm", "name": "z"}, "interface": "n"},
        "operator",
    ),
    ("GET", "/api/v1/allocations/1", None, "viewer"),
    ("POST", "/api/v1/allocations/1/confirm", None, "operator"),
    ("DELETE", "/api/v1/allocations/1", None, "operator"),
    ("GET", "/api/v1/macs/02:00:00:00:00:01", None, "viewer"),
    ("GET", "/api/v1/duplicates", None, "viewer"),
    ("GET", "/api/v1/events", None, "viewer"),
]
CALLERS = ["anonymous", "bad-token", "viewer", "operator", "admin"]


def prepare(client: FlaskClient, admin: Headers) -> None:
    """Pool 2 with ranges 2 and 3, scope 2 (/dc1) and pending allocation 1."""
    two = {
        "name": "two",
        "ranges": [RANGE, {"start": "0a:00:00:01:00:00", "end": "0a:00:00:01:00:ff"}],
    }
    assert client.post("/api/v1/pools", json=two, headers=admin).status_code == 201
    dc = {"kind": "datacenter", "name": "dc1"}
    assert client.post("/api/v1/scopes", json=dc, headers=admin).status_code == 201
    pending = client.post("/api/v1/allocations", json={**OWNER, "ttl_seconds": 600}, headers=admin)
    assert pending.status_code == 201


@dataclass
class Env:
    client: FlaskClient
    tokens: dict[str, str]
    snapshot: Callable[[], dict[str, Any]]

    def headers(self, caller: str) -> Headers:
        if caller == "anonymous":
            return {}
        if caller == "bad-token":
            return {"Authorization": "Bearer mpt_not-a-real-token"}
        return {"Authorization": f"Bearer {self.tokens[caller]}"}


def _env(tmp: Path) -> Iterator[Env]:
    db = prepare_database(f"sqlite:///{tmp / 'macpool.db'}")
    tokens = make_tokens(db)
    app = make_app(str(db.url), tmp)
    client = app.test_client()
    prepare(client, {"Authorization": f"Bearer {tokens['admin']}"})
    yield Env(client, tokens, snapshot_of(db))
    state(app).database.dispose()
    db.dispose()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One prepared app for every call that must not change anything."""
    yield from _env(tmp_path_factory.mktemp("authz"))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Env]:
    """A prepared app of its own, for a write that is allowed."""
    yield from _env(tmp_path)


def _allowed_write(caller: str, method: str, needed: str) -> bool:
    return caller in ROLES and role_allows(caller, needed) and method != "GET"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "needed"), MATRIX)
def test_authorization_matrix(
    request: pytest.FixtureRequest,
    caller: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    needed: str,
) -> None:
    # Allowed writes change the data, so they get an app of their own; the rest share one.
    env: Env = request.getfixturevalue(
        "fresh" if _allowed_write(caller, method, needed) else "shared"
    )
    before = env.snapshot()
    answer = env.client.open(path, method=method, json=body, headers=env.headers(caller))
    if caller in ("anonymous", "bad-token"):
        assert answer.status_code == 401
        assert answer.json["reason"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="macpool"')
        assert ("invalid_token" in answer.headers["WWW-Authenticate"]) == (caller == "bad-token")
    elif not role_allows(caller, needed):
        assert answer.status_code == 403
        assert answer.json["reason"] == "forbidden"
        assert f"the {needed} role" in answer.json["message"]
    else:
        assert answer.status_code < 300, answer.json
        if method != "GET":
            assert env.snapshot() != before
            return
    assert env.snapshot() == before


def test_revoked_token_is_refused(client: FlaskClient, operator: Headers, app: Any) -> None:
    from manager.core.actor import Actor
    from manager.services.auth import revoke_token
    from manager.web import state

    assert client.get("/api/v1/pools", headers=operator).status_code == 200
    with state(app).database.session(write=True) as session:
        revoke_token(session, Actor("tests"), "operator")
    answer = client.get("/api/v1/pools", headers=operator)
    assert (answer.status_code, answer.json["reason"]) == (401, "unauthorized")


def test_open_endpoints_need_no_token(client: FlaskClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/docs"):
        assert client.get(path).status_code == 200, path


def test_actor_of_a_write_is_the_token(client: FlaskClient, admin: Headers) -> None:
    client.post("/api/v1/scopes", json={"kind": "datacenter", "name": "dcx"}, headers=admin)
    latest = client.get("/api/v1/events", headers=admin).json[0]
    assert (latest["action"], latest["actor"]) == ("scope.create", "token:admin")
