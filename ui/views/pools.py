"""Pools: list, detail, create and edit with any number of ranges, delete."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from manager.core.errors import MacPoolError
from manager.core.mac import format_mac_int
from manager.services import (
    create_pool,
    delete_pool,
    find_allocations,
    get_pool,
    pool_statistics,
    status_of,
    update_pool,
)
from manager.web import unit_of_work
from ui.blueprint import bp
from ui.confirm import confirm_and_delete
from ui.forms import (
    FormState,
    RangeRow,
    checkbox,
    mark_range_rows,
    place_error,
    range_inputs,
    range_rows,
    text_field,
)
from ui.paging import Pager, requested_page, window
from ui.security import requires, ui_actor
from ui.views.dashboard import pool_summaries

POOL_FIELDS = ("name", "description", "allow_duplicates", "ranges")
#: Spare empty rows shown under the filled ones, so a range can be added without a round trip.
SPARE_ROWS = 1


@bp.get("/pools")
def pools() -> ResponseReturnValue:
    """Every pool with its statistics."""
    with unit_of_work() as db:
        return render_template("ui/pools.html", summaries=pool_summaries(db))


@bp.get("/pools/<int:pool_id>")
def pool_detail(pool_id: int) -> ResponseReturnValue:
    """One pool: its ranges with sizes, statistics and its allocations (paginated)."""
    with unit_of_work() as db:
        pool = get_pool(db, pool_id)
        allocations = find_allocations(db, pool_id=pool_id, **window(requested_page()))
        return render_template(
            "ui/pool_detail.html",
            pool=pool,
            stats=pool_statistics(db, pool),
            allocations=allocations.items,
            pager=Pager.of(allocations, "ui.pool_detail", pool_id=pool_id),
        )


def _render_form(
    form: FormState, rows: list[RangeRow], *, pool_id: int | None, status: int = 200
) -> ResponseReturnValue:
    if not any(row.blank for row in rows):
        rows = rows + [RangeRow() for _ in range(SPARE_ROWS)]
    return render_template("ui/pool_form.html", form=form, rows=rows, pool_id=pool_id), status


def _submitted() -> tuple[FormState, list[RangeRow]]:
    form = FormState(
        values={
            "name": text_field("name"),
            "description": text_field("description"),
            "allow_duplicates": "on" if checkbox("allow_duplicates") else "",
        }
    )
    return form, range_rows()


def _row_operation(rows: list[RangeRow]) -> list[RangeRow] | None:
    """The form's own buttons (add or remove a row) work without JavaScript."""
    op = request.form.get("op", "save")
    if op == "add_row":
        return [*rows, RangeRow()]
    if op.startswith("remove:") and op[7:].isdigit():
        index = int(op[7:])
        return [row for i, row in enumerate(rows) if i != index] or [RangeRow()]
    return None


def _failed(
    exc: MacPoolError, form: FormState, rows: list[RangeRow], pool_id: int | None
) -> ResponseReturnValue:
    form.errors.update(place_error(exc, POOL_FIELDS))
    mark_range_rows(rows, exc)
    return _render_form(form, rows, pool_id=pool_id, status=status_of(exc))


def _submit(pool_id: int | None) -> ResponseReturnValue:
    """The pool form's POST: a row button, or saving through the services."""
    form, rows = _submitted()
    changed = _row_operation(rows)
    if changed is not None:
        return _render_form(form, changed, pool_id=pool_id)
    name, description = form.value("name"), form.value("description")
    allow_duplicates, ranges = bool(form.value("allow_duplicates")), range_inputs(rows)
    try:
        with unit_of_work(write=True) as db:
            if pool_id is None:
                pool = create_pool(
                    db,
                    ui_actor(),
                    name=name,
                    description=description,
                    allow_duplicates=allow_duplicates,
                    ranges=ranges,
                )
            else:
                pool = update_pool(
                    db,
                    ui_actor(),
                    pool_id,
                    name=name,
                    description=description,
                    allow_duplicates=allow_duplicates,
                    ranges=ranges,
                )
            saved_id, saved_name = pool.id, pool.name
    except MacPoolError as exc:
        return _failed(exc, form, rows, pool_id)
    flash(f"Pool '{saved_name}' {'created' if pool_id is None else 'saved'}.", "success")
    return redirect(url_for("ui.pool_detail", pool_id=saved_id))


@bp.route("/pools/new", methods=["GET", "POST"])
@requires("admin")
def pool_new() -> ResponseReturnValue:
    """Create a pool."""
    if request.method == "GET":
        return _render_form(FormState(), [], pool_id=None)
    return _submit(None)


@bp.route("/pools/<int:pool_id>/edit", methods=["GET", "POST"])
@requires("admin")
def pool_edit(pool_id: int) -> ResponseReturnValue:
    """Edit a pool's name, description, duplicates flag and ranges."""
    if request.method == "POST":
        return _submit(pool_id)
    with unit_of_work() as db:
        pool = get_pool(db, pool_id)
        form = FormState(
            values={
                "name": pool.name,
                "description": pool.description,
                "allow_duplicates": "on" if pool.allow_duplicates else "",
            }
        )
        rows = [
            RangeRow(format_mac_int(r.start_mac), format_mac_int(r.end_mac))
            for r in sorted(pool.ranges, key=lambda r: r.start_mac)
        ]
    return _render_form(form, rows, pool_id=pool_id)


@bp.route("/pools/<int:pool_id>/delete", methods=["GET", "POST"])
@requires("admin")
def pool_delete(pool_id: int) -> ResponseReturnValue:
    """Ask for confirmation, then delete; refusals are shown on the confirmation page."""
    return confirm_and_delete(
        label=lambda db: f"pool '{get_pool(db, pool_id).name}'",
        delete=lambda db: delete_pool(db, ui_actor(), pool_id),
        action=url_for("ui.pool_delete", pool_id=pool_id),
        back=url_for("ui.pool_detail", pool_id=pool_id),
        done=url_for("ui.pools"),
    )
