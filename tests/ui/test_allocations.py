"""Allocation pages: search, reserve, release, a MAC's page."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from manager.core.actor import Actor, Owner
from manager.services import allocate_mac, find_allocations
from tests.ui.conftest import event_count, post


def allocate(app: Flask, name: str, mac: str | None = None) -> str:
    from manager.core.mac import format_mac_int
    from manager.web import database

    with app.app_context(), database().session(write=True) as s:
        result = allocate_mac(
            s, Actor("t"), scope="/", owner=Owner("vm", name), interface="eth0", mac=mac
        )
        return format_mac_int(result.allocation.mac)


def held(app: Flask, **filters: object) -> list:
    from manager.web import database

    with app.app_context(), database().session() as s:
        return list(find_allocations(s, **filters).items)


@pytest.mark.parametrize(
    "form", ["02:00:00:00:12:34", "02-00-00-00-12-34", "0200.0000.1234", "020000001234"]
)
def test_search_by_mac_in_any_format(app: Flask, viewer: FlaskClient, form: str) -> None:
    allocate(app, "web-1", "02:00:00:00:12:34")
    page = viewer.get("/allocations", query_string={"q": form}).get_data(as_text=True)
    assert "web-1" in page and "Searching by MAC" in page


def test_search_by_owner_and_state(app: Flask, viewer: FlaskClient) -> None:
    allocate(app, "db-1")
    allocate(app, "db-2")
    page = viewer.get("/allocations", query_string={"q": "db-1"}).get_data(as_text=True)
    assert "db-1" in page and "db-2" not in page
    none = viewer.get("/allocations", query_string={"q": "db-1", "state": "reserved"})
    assert "No allocation matches." in none.get_data(as_text=True)


def test_search_paginates(app: Flask, viewer: FlaskClient) -> None:
    for i in range(51):
        allocate(app, f"vm-{i:02d}")
    first = viewer.get("/allocations").get_data(as_text=True)
    assert "Page 1 of 2 (51 in all)" in first
    second = viewer.get("/allocations?page=2").get_data(as_text=True)
    assert second.count("<strong>vm-") == 1
    assert viewer.get("/allocations?page=-3").status_code == 200


def test_reserve_next_free_mac(app: Flask, operator: FlaskClient) -> None:
    answer = post(
        operator,
        "/allocations/reserve",
        {"scope": "/", "owner_name": "router-1", "interface": "wan"},
    )
    assert answer.status_code == 302 and answer.location.startswith("/macs/")
    (allocation,) = held(app, owner_name="router-1")
    assert allocation.state == "reserved" and allocation.owner_kind == "device"
    page = operator.get(answer.location).get_data(as_text=True)
    assert "router-1" in page and "Default" in page and "Reserved" in page


def test_reserve_refusals_keep_the_form(app: Flask, operator: FlaskClient) -> None:
    taken = allocate(app, "vm-a")
    before = event_count(app)
    answer = post(
        operator,
        "/allocations/reserve",
        {"scope": "/", "owner_name": "gw", "interface": "eth0", "mac": taken},
    )
    assert answer.status_code == 409
    page = answer.get_data(as_text=True)
    assert 'id="mac-error"' in page and "vm-a" in page and 'value="gw"' in page
    bad = post(
        operator,
        "/allocations/reserve",
        {"scope": "/", "owner_name": "gw", "interface": "e", "mac": "ff:ff"},
    )
    assert bad.status_code == 422 and 'id="mac-error"' in bad.get_data(as_text=True)
    multicast = post(
        operator,
        "/allocations/reserve",
        {"scope": "/", "owner_name": "gw", "interface": "e", "mac": "01:00:5e:00:00:01"},
    )
    assert multicast.status_code == 422
    no_name = post(
        operator, "/allocations/reserve", {"scope": "/", "owner_name": "", "interface": "e"}
    )
    assert no_name.status_code == 422 and 'id="owner_name-error"' in no_name.get_data(as_text=True)
    no_scope = post(
        operator,
        "/allocations/reserve",
        {"scope": "/nowhere", "owner_name": "gw", "interface": "e"},
    )
    assert no_scope.status_code == 404
    assert event_count(app) == before


def test_release_with_confirmation(app: Flask, operator: FlaskClient) -> None:
    mac = allocate(app, "vm-r")
    (allocation,) = held(app, owner_name="vm-r")
    confirm = operator.get(f"/allocations/{allocation.id}/release").get_data(as_text=True)
    assert mac in confirm and "vm-r" in confirm
    answer = post(operator, f"/allocations/{allocation.id}/release")
    assert answer.status_code == 302 and held(app, owner_name="vm-r") == []
    assert "Nobody holds this MAC" in operator.get(answer.location).get_data(as_text=True)
    again = post(operator, f"/allocations/{allocation.id}/release")
    assert again.status_code == 404


def test_mac_page(app: Flask, viewer: FlaskClient) -> None:
    allocate(app, "vm-m", "02:00:00:00:00:42")
    page = viewer.get("/macs/0200.0000.0042").get_data(as_text=True)
    assert "02:00:00:00:00:42" in page and "vm-m" in page and "Default" in page
    outside = viewer.get("/macs/0a:00:00:00:00:01").get_data(as_text=True)
    assert "outside every pool" in outside
    bad = viewer.get("/macs/not-a-mac")
    assert bad.status_code == 422 and "not-a-mac" in bad.get_data(as_text=True)
