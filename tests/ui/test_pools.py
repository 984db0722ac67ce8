"""Pool pages through the Flask client: list, detail, create, edit, delete, form errors."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from manager.core.actor import Actor, Owner
from manager.db import Pool
from manager.services import allocate_mac, assign_pool, create_scope
from tests.ui.conftest import event_count, post

RANGE_A = ("0a:00:00:00:00:00", "0a:00:00:00:00:ff")
RANGE_B = ("0A-00-00-00-10-00", "0a0000001fff")


def pools_named(app: Flask, name: str) -> list[Pool]:
    from manager.web import database

    with app.app_context(), database().session() as s:
        return list(s.scalars(select(Pool).where(Pool.name == name)))


def create(client: FlaskClient, name: str, *ranges: tuple[str, str], **extra: str):
    return post(
        client,
        "/pools/new",
        {
            "name": name,
            "range_start": [r[0] for r in ranges],
            "range_end": [r[1] for r in ranges],
            **extra,
        },
    )


def test_list_and_detail_show_ranges_and_sizes(admin: FlaskClient) -> None:
    page = admin.get("/pools").get_data(as_text=True)
    assert "Default" in page and "default</span>" in page
    detail = admin.get("/pools/1").get_data(as_text=True)
    assert "02:00:00:00:00:00" in detail and "02:00:00:ff:ff:ff" in detail
    assert "16,777,216" in detail  # the size of the default range


def test_create_pool_with_two_ranges(app: Flask, admin: FlaskClient) -> None:
    answer = create(
        admin, "lab", RANGE_A, RANGE_B, description="Lab <b>VMs</b>", allow_duplicates="on"
    )
    assert answer.status_code == 302
    (pool,) = pools_named(app, "lab")
    assert pool.allow_duplicates and pool.description == "Lab <b>VMs</b>"
    assert sorted((r.start_mac, r.end_mac) for r in pool.ranges) == [
        (0x0A0000000000, 0x0A00000000FF),
        (0x0A0000001000, 0x0A0000001FFF),
    ]
    detail = admin.get(answer.location).get_data(as_text=True)
    assert "Pool &#39;lab&#39; created." in detail
    assert "Lab &lt;b&gt;VMs&lt;/b&gt;" in detail  # escaped, never markup
    assert "0a:00:00:00:10:00" in detail and "4,096" in detail


def test_blank_rows_are_spare_rows(app: Flask, admin: FlaskClient) -> None:
    answer = post(
        admin,
        "/pools/new",
        {"name": "spare", "range_start": ["", RANGE_A[0]], "range_end": ["", RANGE_A[1]]},
    )
    assert answer.status_code == 302
    assert len(pools_named(app, "spare")[0].ranges) == 1


def test_overlap_is_shown_next_to_the_ranges_keeping_input(app: Flask, admin: FlaskClient) -> None:
    before = event_count(app)
    answer = create(admin, "clash", RANGE_A, ("02:00:00:00:10:00", "02:00:00:00:10:ff"))
    assert answer.status_code == 409
    page = answer.get_data(as_text=True)
    assert 'id="ranges-error"' in page
    assert "overlaps pool &#39;Default&#39; range 02:00:00:00:00:00-02:00:00:ff:ff:ff" in page
    # The offending row says so itself; the other row is fine.
    assert page.count('class="range-row has-error"') == 1
    assert 'value="clash"' in page and 'value="02:00:00:00:10:00"' in page
    assert f'value="{RANGE_A[0]}"' in page
    assert pools_named(app, "clash") == [] and event_count(app) == before


def test_overlap_between_rows_of_the_form(admin: FlaskClient) -> None:
    answer = create(admin, "self", RANGE_A, ("0a:00:00:00:00:80", "0a:00:00:00:01:00"))
    assert answer.status_code == 409
    page = answer.get_data(as_text=True)
    assert page.count('class="range-row has-error"') == 2
    assert "Ranges of one pool must not overlap." in page


def test_bad_bound_is_shown_on_its_row(admin: FlaskClient) -> None:
    answer = create(admin, "bad", RANGE_A, ("01:00:00:00:00:00", "zz"))
    assert answer.status_code == 422
    page = answer.get_data(as_text=True)
    assert page.count('class="range-row has-error"') == 1
    assert "&#39;zz&#39;" in page and 'value="zz"' in page


def test_name_errors_are_shown_next_to_the_name(admin: FlaskClient) -> None:
    answer = create(admin, "default", RANGE_A)
    assert answer.status_code == 409
    page = answer.get_data(as_text=True)
    assert 'id="name-error"' in page and "already exists" in page
    long = create(admin, "x" * 300, RANGE_A)
    assert long.status_code == 422 and 'id="name-error"' in long.get_data(as_text=True)


def test_no_range_at_all(admin: FlaskClient) -> None:
    answer = post(admin, "/pools/new", {"name": "empty", "range_start": "", "range_end": ""})
    assert answer.status_code == 422
    assert "at least one range" in answer.get_data(as_text=True)


def test_add_and_remove_row_buttons_work_without_javascript(app: Flask, admin: FlaskClient) -> None:
    data = {"name": "rows", "range_start": [RANGE_A[0]], "range_end": [RANGE_A[1]]}
    added = post(admin, "/pools/new", {**data, "op": "add_row"}).get_data(as_text=True)
    assert added.count("data-range-row>") == 2 and 'value="rows"' in added
    removed = post(
        admin,
        "/pools/new",
        {
            "name": "rows",
            "range_start": [RANGE_A[0], "x"],
            "range_end": [RANGE_A[1], "y"],
            "op": "remove:1",
        },
    ).get_data(as_text=True)
    assert 'value="x"' not in removed and f'value="{RANGE_A[0]}"' in removed
    assert pools_named(app, "rows") == []


def test_edit_pool(app: Flask, admin: FlaskClient) -> None:
    create(admin, "edit-me", RANGE_A)
    (pool,) = pools_named(app, "edit-me")
    form = admin.get(f"/pools/{pool.id}/edit").get_data(as_text=True)
    assert f'value="{RANGE_A[0]}"' in form and 'value="edit-me"' in form
    answer = post(
        admin,
        f"/pools/{pool.id}/edit",
        {
            "name": "edited",
            "range_start": [RANGE_A[0], RANGE_B[0]],
            "range_end": [RANGE_A[1], RANGE_B[1]],
        },
    )
    assert answer.status_code == 302
    (edited,) = pools_named(app, "edited")
    assert len(edited.ranges) == 2


def test_turning_duplicates_off_is_refused_next_to_the_checkbox(
    app: Flask, admin: FlaskClient
) -> None:
    from manager.web import database

    create(admin, "dups", RANGE_A, allow_duplicates="on")
    (pool,) = pools_named(app, "dups")
    with app.app_context(), database().session(write=True) as s:
        scope = create_scope(s, Actor("t"), kind="datacenter", name="dc", pool_id=pool.id)
        for name in ("a", "b"):
            allocate_mac(
                s, Actor("t"), scope=scope, owner=Owner("vm", name), interface="e", mac=RANGE_A[0]
            )
    answer = post(
        admin,
        f"/pools/{pool.id}/edit",
        {"name": "dups", "range_start": RANGE_A[0], "range_end": RANGE_A[1]},
    )
    assert answer.status_code == 409
    page = answer.get_data(as_text=True)
    assert 'id="allow_duplicates-error"' in page and "0a:00:00:00:00:00" in page


def test_delete_needs_confirmation_and_shows_refusals(app: Flask, admin: FlaskClient) -> None:
    from manager.web import database

    refused = post(admin, "/pools/1/delete")
    assert refused.status_code == 409 and "default pool" in refused.get_data(as_text=True)
    create(admin, "gone", RANGE_A)
    (pool,) = pools_named(app, "gone")
    with app.app_context(), database().session(write=True) as s:
        scope = create_scope(s, Actor("t"), kind="datacenter", name="dc", pool_id=pool.id)
    confirm = admin.get(f"/pools/{pool.id}/delete").get_data(as_text=True)
    assert "Do you really want to delete pool &#39;gone&#39;" in confirm
    assigned = post(admin, f"/pools/{pool.id}/delete")
    assert assigned.status_code == 409 and "/dc" in assigned.get_data(as_text=True)
    with app.app_context(), database().session(write=True) as s:
        assign_pool(s, Actor("t"), scope.id, None)
    assert post(admin, f"/pools/{pool.id}/delete").status_code == 302
    assert pools_named(app, "gone") == []


def test_missing_pool_is_a_404_page(admin: FlaskClient) -> None:
    answer = admin.get("/pools/999")
    assert answer.status_code == 404 and "Pool 999 does not exist." in answer.get_data(as_text=True)
