"""Dashboard, duplicates, audit log, error pages, plugin navigation."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from manager.core.actor import Actor, Owner
from manager.services import allocate_mac, create_pool, create_scope, record_event
from tests.ui.conftest import app_session, hold_duplicate, login_as


def test_dashboard_shows_pools_and_near_exhaustion(app: Flask, viewer: FlaskClient) -> None:
    with app_session(app) as s:
        pool = create_pool(
            s, Actor("t"), name="tiny", ranges=["0a:00:00:00:00:01-0a:00:00:00:00:0c"]
        )
        scope = create_scope(s, Actor("t"), kind="datacenter", name="dc", pool_id=pool.id)
        s.low_threshold = 10
        for i in range(3):
            allocate_mac(s, Actor("t"), scope=scope, owner=Owner("vm", f"v{i}"), interface="e")
    page = viewer.get("/").get_data(as_text=True)
    assert "Pools near exhaustion" in page and "only 9 free MAC(s) left" in page
    assert 'aria-label="Utilization of tiny"' in page and "3 of 12 (25.0%)" in page
    assert (
        "Pool &#39;tiny&#39; has only 10 free MAC(s) left." in page
    )  # the warning event recorded at 10


def test_dashboard_without_warnings(viewer: FlaskClient) -> None:
    page = viewer.get("/").get_data(as_text=True)
    assert "Pools near exhaustion" not in page and "No warnings." in page


def test_duplicates_page(app: Flask, viewer: FlaskClient) -> None:
    assert "No MAC is held twice." in viewer.get("/duplicates").get_data(as_text=True)
    mac = hold_duplicate(app, first_octet="0a", owners=("first", "second"))
    page = viewer.get("/duplicates").get_data(as_text=True)
    assert mac in page and "2 holders" in page
    assert "first" in page and "second" in page


def test_audit_filters_and_pagination(app: Flask, viewer: FlaskClient) -> None:
    with app_session(app) as s:
        for i in range(55):
            record_event(
                s, Actor("alice"), action="pool.update", target_type="pool", target=f"p{i}"
            )
        record_event(s, Actor("bob"), action="scope.create", target_type="scope", target="/x")
        record_event(
            s, Actor("bob"), action="pool.low", target_type="pool", target="p", severity="warning"
        )
    by_actor = viewer.get("/audit?actor=bob").get_data(as_text=True)
    assert "scope.create" in by_actor and "pool.update" not in by_actor
    by_action = viewer.get("/audit?action=scope.").get_data(as_text=True)
    assert "/x" in by_action and "pool.low" not in by_action
    warnings = viewer.get("/audit?severity=warning").get_data(as_text=True)
    assert "pool.low" in warnings and "scope.create" not in warnings
    paged = viewer.get("/audit?actor=alice&page=2").get_data(as_text=True)
    assert "Page 2 of 2 (55 in all)" in paged and "actor=alice" in paged
    odd = viewer.get("/audit?severity=<script>&page=x")
    assert odd.status_code == 200 and "<script>" not in odd.get_data(as_text=True)


def test_text_from_the_database_is_escaped(app: Flask, viewer: FlaskClient) -> None:
    with app_session(app) as s:
        create_scope(s, Actor("t"), kind="datacenter", name="<img src=x onerror=alert(1)>")
    page = viewer.get("/scopes").get_data(as_text=True)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_unknown_page_is_a_ui_404_for_browsers(viewer: FlaskClient) -> None:
    answer = viewer.get("/no/such/page", headers={"Accept": "text/html"})
    assert answer.status_code == 404 and 'class="card narrow error-page"' in answer.get_data(
        as_text=True
    )
    api = viewer.get("/api/v1/nothing-here", headers={"Accept": "text/html"})
    assert api.status_code == 404 and "error-page" not in api.get_data(as_text=True)


def test_server_error_page(
    app: Flask, viewer: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ui.views.logs

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    monkeypatch.setattr(ui.views.logs, "list_duplicates", broken)
    answer = viewer.get("/duplicates")
    assert answer.status_code == 500
    text = answer.get_data(as_text=True)
    assert "Something went wrong" in text and "boom" not in text


def test_plugins_can_add_a_nav_entry(app: Flask, client: FlaskClient) -> None:
    app.extensions["macpool.ui_nav"].append(("Elsewhere", "ui.audit"))
    login_as(client, "viewer")
    page = client.get("/").get_data(as_text=True)
    assert ">Elsewhere</a>" in page
    assert "Import" not in page  # the oVirt import page is the plugin's; plugins are disabled here


def test_unreachable_database_is_a_503_page(app: Flask, viewer: FlaskClient) -> None:
    """The database goes away under a logged-in user: a page that says so, no traceback."""
    from manager.db import Database
    from manager.web import state
    from tests.plugins.kubernetes.webhook_harness import free_port

    working = state(app).database
    state(app).database = Database(f"postgresql+psycopg://x@127.0.0.1:{free_port()}/x")
    try:
        for path in ("/", "/pools", "/allocations"):
            answer = viewer.get(path)
            assert answer.status_code == 503
            page = answer.get_data(as_text=True)
            assert "MacPool cannot reach its database" in page
            assert "Traceback" not in page and "psycopg" not in page
            assert int(answer.headers["Retry-After"]) > 0
    finally:
        state(app).database = working
    assert viewer.get("/pools").status_code == 200
