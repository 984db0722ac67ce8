"""Login, logout, sessions, CSRF and role checks on every POST route."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from manager.app import create_app
from manager.db import Database
from tests.ui.conftest import (
    CSRF_RE,
    PASSWORD,
    csrf_token,
    event_count,
    login_as,
    make_app,
    post,
)

#: Every POST route of the UI with the least role it needs (a test checks the list is complete).
POST_ROUTES = {
    "/logout": "viewer",
    "/pools/new": "admin",
    "/pools/1/edit": "admin",
    "/pools/1/delete": "admin",
    "/scopes/new": "admin",
    "/scopes/1/pool": "admin",
    "/scopes/1/move": "admin",
    "/scopes/1/delete": "admin",
    "/allocations/reserve": "operator",
    "/allocations/1/release": "operator",
    "/allocations/1/complete-handover": "operator",
    "/migrations/check": "viewer",
}
FORMS = {
    "/pools/new": {
        "name": "forged",
        "range_start": "0a:00:00:00:00:00",
        "range_end": "0a:00:00:00:00:ff",
    },
    "/scopes/new": {"kind": "datacenter", "name": "forged", "parent": "/"},
    "/allocations/reserve": {"scope": "/", "owner_name": "forged", "interface": "eth0"},
}


def login(client: FlaskClient, username: str, password: str, next_url: str = ""):
    token = csrf_token(client, "/login")
    return client.post(
        "/login",
        data={"csrf_token": token, "username": username, "password": password, "next": next_url},
    )


def test_anonymous_is_sent_to_login(client: FlaskClient) -> None:
    answer = client.get("/pools?page=2")
    assert answer.status_code == 302
    assert answer.location.startswith("/login?next=/pools")


def test_login_and_logout(client: FlaskClient) -> None:
    answer = login(client, "admin", PASSWORD, next_url="/scopes")
    assert answer.status_code == 302 and answer.location == "/scopes"
    page = client.get("/").get_data(as_text=True)
    assert "admin" in page and "Log out" in page
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).status_code == 302
    assert client.get("/").status_code == 302


def test_session_cookie_is_httponly_and_lax(client: FlaskClient) -> None:
    answer = login(client, "viewer", PASSWORD)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP by default (make run): the browser must keep it


def test_session_cookie_is_secure_when_configured(
    database: Database, tmp_path: Path, password_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MACPOOL_SECURE_COOKIES", "true")
    app = make_app(database, tmp_path, password_hash)
    https = "https://localhost"
    with app.test_client() as client:
        page = client.get("/login", base_url=https).get_data(as_text=True)
        found = CSRF_RE.search(page)
        assert found
        form = {"csrf_token": found.group(1), "username": "viewer", "password": PASSWORD}
        answer = client.post("/login", data=form, base_url=https)
        assert answer.status_code == 302
        cookie = answer.headers["Set-Cookie"]
        assert client.get("/", base_url=https).status_code == 200  # the cookie came back
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:x"])
def test_login_never_redirects_off_site(client: FlaskClient, target: str) -> None:
    answer = login(client, "admin", PASSWORD, next_url=target)
    assert answer.location == "/"


def test_login_failure_does_not_reveal_the_user(client: FlaskClient) -> None:
    wrong_password = login(client, "admin", "wrong password")
    no_such_user = login(client, "nobody", "wrong password")
    assert wrong_password.status_code == no_such_user.status_code == 401
    text = wrong_password.get_data(as_text=True)
    assert "Unknown username or wrong password." in text

    # The CSRF token is signed with a timestamp, so it may differ between two responses.
    def comparable(page: str, username: str) -> str:
        return CSRF_RE.sub("csrf", page).replace(username, "X")

    assert comparable(text, "admin") == comparable(no_such_user.get_data(as_text=True), "nobody")
    assert client.get("/").status_code == 302  # still anonymous


def test_repeated_failures_are_throttled(client: FlaskClient) -> None:
    for _ in range(5):
        assert login(client, "operator", "nope nope").status_code == 401
    refused = login(client, "operator", PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.get_data(as_text=True)


def test_disabled_account_loses_its_session(app: Flask, admin: FlaskClient) -> None:
    from manager.db import User
    from manager.web import database

    with app.app_context(), database().session(write=True) as s:
        s.query(User).filter_by(username="admin").one().disabled = True
    assert admin.get("/").status_code == 302


def test_post_without_csrf_token_is_refused(app: Flask, admin: FlaskClient) -> None:
    before = event_count(app)
    answer = admin.post("/pools/new", data=FORMS["/pools/new"])
    assert answer.status_code == 400
    assert "security token" in answer.get_data(as_text=True)
    bad = admin.post("/pools/new", data={**FORMS["/pools/new"], "csrf_token": "forged"})
    assert bad.status_code == 400
    assert event_count(app) == before


def test_login_form_needs_csrf_too(client: FlaskClient) -> None:
    answer = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert answer.status_code == 400


def test_post_route_table_is_complete(app: Flask) -> None:
    posted = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("ui.") and "POST" in (rule.methods or ())
    }
    expected = {path.replace("/1/", "/<int:pool_id>/") for path in POST_ROUTES if "pools" in path}
    expected |= {
        path.replace("/1/", "/<int:scope_id>/") for path in POST_ROUTES if "scopes" in path
    }
    expected |= {
        path.replace("/1/", "/<int:allocation_id>/")
        for path in POST_ROUTES
        if "allocations" in path
    }
    expected |= {"/logout", "/login", "/migrations/check"}
    assert posted == expected


@pytest.mark.parametrize(("path", "role"), sorted(POST_ROUTES.items()))
def test_roles_below_the_requirement_are_refused(
    app: Flask, client: FlaskClient, path: str, role: str
) -> None:
    from tests.ui.conftest import ROLES

    weaker = ROLES[: ROLES.index(role)]
    for username in weaker:
        login_as(client, username)
        before = event_count(app)
        answer = post(client, path, FORMS.get(path, {}))
        assert answer.status_code == 403, (username, path)
        assert "role does not allow" in answer.get_data(as_text=True)
        assert event_count(app) == before


def test_anonymous_post_is_refused(app: Flask, client: FlaskClient) -> None:
    token = csrf_token(client, "/login")
    answer = client.post("/pools/new", data={**FORMS["/pools/new"], "csrf_token": token})
    assert answer.status_code == 403


def test_viewer_sees_no_edit_controls(viewer: FlaskClient) -> None:
    for path in ("/pools", "/pools/1", "/scopes", "/scopes/1", "/allocations"):
        page = viewer.get(path).get_data(as_text=True)
        assert "New pool" not in page and "Edit</a>" not in page
        assert "Create scope" not in page and "Save assignment" not in page
        assert "Reserve a MAC" not in page and "Release</a>" not in page
    assert viewer.get("/pools/new").status_code == 403


def test_admin_sees_edit_controls(admin: FlaskClient) -> None:
    assert "New pool" in admin.get("/pools").get_data(as_text=True)
    assert "Create scope" in admin.get("/scopes").get_data(as_text=True)
    assert "Reserve a MAC" in admin.get("/allocations").get_data(as_text=True)


def test_the_throttle_is_shared_by_every_worker(
    app: Flask, database: Database, tmp_path: Path, client: FlaskClient
) -> None:
    """Failures counted by one app (one worker, or one replica) block logins on another app on
    the same database, and a success there clears them."""
    for _ in range(5):
        assert login(client, "operator", "nope nope").status_code == 401
    # A second app on the same database, as another worker process or replica would be.
    other = create_app(
        {"database_url": str(database.url), "data_dir": str(tmp_path), "plugins": ""},
        database=database,
    )
    other.config.update(SECRET_KEY=app.config["SECRET_KEY"], MACPOOL_UI_LOGIN_DELAY=0)
    with other.test_client() as second:
        refused = login(second, "operator", PASSWORD)
        assert refused.status_code == 429
        assert "Too many failed logins" in refused.get_data(as_text=True)
        # From another address: the username is still blocked, other accounts are not.
        second.environ_base["REMOTE_ADDR"] = "192.0.2.9"
        assert login(second, "operator", PASSWORD).status_code == 429
        assert login(second, "viewer", PASSWORD).status_code == 302


def test_a_success_clears_the_failures(client: FlaskClient) -> None:
    for _ in range(4):
        assert login(client, "operator", "nope nope").status_code == 401
    assert login(client, "operator", PASSWORD).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    for _ in range(4):
        assert login(client, "operator", "nope nope").status_code == 401
    assert login(client, "operator", PASSWORD).status_code == 302
