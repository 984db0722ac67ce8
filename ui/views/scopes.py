"""Scopes: the tree with assigned and inherited pools; create, assign/clear, move, delete."""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from manager.core.errors import InvalidInput, MacPoolError
from manager.services import (
    ResolvedPool,
    Scope,
    assign_pool,
    create_scope,
    delete_scope,
    find_allocations,
    get_scope,
    list_pools,
    list_scopes,
    move_scope,
    resolve_pool,
    status_of,
)
from manager.web import unit_of_work
from scopes import ScopeKind
from ui.blueprint import bp
from ui.confirm import confirm_and_delete
from ui.forms import FormState, place_error, text_field
from ui.paging import Pager, requested_page, window
from ui.security import requires, ui_actor

CREATE_FIELDS = ("kind", "name", "parent", "pool")
KINDS = [k.value for k in ScopeKind if k is not ScopeKind.ENGINE]


@dataclass(frozen=True)
class ScopeRow:
    """A scope in the tree with the pool it uses and where that pool comes from."""

    scope: Scope
    resolved: ResolvedPool
    depth: int


def scope_rows(db: Session) -> list[ScopeRow]:
    """The whole tree, depth first (ordered by path)."""
    return [
        ScopeRow(s, resolve_pool(db, s), 0 if s.path == "/" else s.path.count("/"))
        for s in list_scopes(db)
    ]


def _pool_choice(raw: str, *, field: str = "pool") -> int | None:
    """The pool select's value: empty means "inherit"."""
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidInput(f"'{raw[:40]}' is not a pool.", field=field)
    return int(raw)


def _render_tree(form: FormState, status: int = 200) -> ResponseReturnValue:
    with unit_of_work() as db:
        page = render_template(
            "ui/scopes.html", rows=scope_rows(db), pools=list_pools(db), kinds=KINDS, form=form
        )
    return page, status


@bp.get("/scopes")
def scopes() -> ResponseReturnValue:
    """The scope tree."""
    return _render_tree(FormState(values={"kind": "datacenter", "parent": "/"}))


@bp.post("/scopes/new")
@requires("admin")
def scope_new() -> ResponseReturnValue:
    """Create a scope under a parent, optionally with a pool."""
    form = FormState(
        values={k: text_field(k) for k in ("kind", "name", "parent", "pool", "description")}
    )
    try:
        with unit_of_work(write=True) as db:
            scope = create_scope(
                db,
                ui_actor(),
                kind=form.value("kind"),
                name=form.value("name"),
                parent=form.value("parent") or "/",
                pool_id=_pool_choice(form.value("pool")),
                description=form.value("description"),
            )
            path = scope.path
    except MacPoolError as exc:
        form.errors.update(place_error(exc, CREATE_FIELDS))
        return _render_tree(form, status_of(exc))
    flash(f"Scope {path} created.", "success")
    return redirect(url_for("ui.scopes"))


def _render_detail(scope_id: int, form: FormState, status: int = 200) -> ResponseReturnValue:
    with unit_of_work() as db:
        scope = get_scope(db, scope_id)
        allocations = find_allocations(db, scope_id=scope_id, **window(requested_page()))
        page = render_template(
            "ui/scope_detail.html",
            scope=scope,
            resolved=resolve_pool(db, scope),
            pools=list_pools(db),
            parents=[s for s in list_scopes(db) if s.kind != "namespace" and s.id != scope.id],
            allocations=allocations.items,
            pager=Pager.of(allocations, "ui.scope_detail", scope_id=scope_id),
            form=form,
        )
    return page, status


@bp.get("/scopes/<int:scope_id>")
def scope_detail(scope_id: int) -> ResponseReturnValue:
    """One scope: its pool (assigned or inherited), its allocations and its edit forms."""
    return _render_detail(scope_id, FormState())


@bp.post("/scopes/<int:scope_id>/pool")
@requires("admin")
def scope_pool(scope_id: int) -> ResponseReturnValue:
    """Assign, change or clear (inherit again) the scope's pool."""
    form = FormState(values={"pool": text_field("pool")})
    try:
        with unit_of_work(write=True) as db:
            scope = assign_pool(db, ui_actor(), scope_id, _pool_choice(form.value("pool")))
            path, assigned = scope.path, scope.pool_id
    except MacPoolError as exc:
        form.errors.update(place_error(exc, ("pool",)))
        return _render_detail(scope_id, form, status_of(exc))
    flash(
        f"Scope {path} now uses its own pool." if assigned else f"Scope {path} inherits its pool.",
        "success",
    )
    return redirect(url_for("ui.scope_detail", scope_id=scope_id))


@bp.post("/scopes/<int:scope_id>/move")
@requires("admin")
def scope_move(scope_id: int) -> ResponseReturnValue:
    """Move the scope (with its subtree) under another parent."""
    form = FormState(values={"parent": text_field("parent")})
    try:
        with unit_of_work(write=True) as db:
            path = move_scope(db, ui_actor(), scope_id, form.value("parent") or "/").path
    except MacPoolError as exc:
        form.errors.update(place_error(exc, ("parent",)))
        return _render_detail(scope_id, form, status_of(exc))
    flash(f"Scope moved to {path}.", "success")
    return redirect(url_for("ui.scope_detail", scope_id=scope_id))


@bp.route("/scopes/<int:scope_id>/delete", methods=["GET", "POST"])
@requires("admin")
def scope_delete(scope_id: int) -> ResponseReturnValue:
    """Ask for confirmation, then delete; refusals are shown on the confirmation page."""
    return confirm_and_delete(
        label=lambda db: f"scope {get_scope(db, scope_id).path}",
        delete=lambda db: delete_scope(db, ui_actor(), scope_id),
        action=url_for("ui.scope_delete", scope_id=scope_id),
        back=url_for("ui.scope_detail", scope_id=scope_id),
        done=url_for("ui.scopes"),
    )
