"""``/api/v1/scopes``: the scope tree, with assigned and effective pools."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from manager.api.blueprint import ApiBlueprint
from manager.api.paging import PAGINATE, page_of
from manager.api.schemas import (
    ErrorSchema,
    ScopeCreateSchema,
    ScopeQueryArgsSchema,
    ScopeSchema,
    ScopeUpdateSchema,
)
from manager.api_support import current_actor, requires
from manager.core.errors import InvalidScope, NotFound
from manager.presenters import scope_data
from manager.services import create_scope, delete_scope, get_scope, list_scopes, update_scope
from manager.web import unit_of_work

blp = ApiBlueprint("scopes", __name__, url_prefix="/api/v1/scopes", description="Scopes")


def _parent(data: dict[str, Any], *, default: str | None) -> int | str | None:
    """The parent given as ``parent_id`` or ``parent`` (a path), never both."""
    parent_id, parent_path = data.pop("parent_id", None), data.pop("parent", None)
    if parent_id is not None and parent_path is not None:
        raise InvalidScope("Give the parent as parent_id or as parent (a path), not both.")
    return parent_id if parent_id is not None else parent_path or default


@blp.route("")
class Scopes(MethodView):
    @requires(blp, "viewer")
    @blp.arguments(ScopeQueryArgsSchema, location="query")
    @blp.response(200, ScopeSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, args: dict[str, Any], pagination_parameters: Any) -> list[dict[str, Any]]:
        """List scopes in path order, or look one up by path"""
        with unit_of_work() as session:
            if "path" in args:
                # A filter that matches nothing is an empty list, not an error.
                try:
                    scopes = [get_scope(session, args["path"])]
                except (NotFound, InvalidScope):
                    scopes = []
            else:
                scopes = list_scopes(session)
            return [scope_data(session, s) for s in page_of(scopes, pagination_parameters)]

    @requires(blp, "admin")
    @blp.arguments(ScopeCreateSchema)
    @blp.response(201, ScopeSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="The parent or the pool")
    @blp.alt_response(409, schema=ErrorSchema, description="name_in_use")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a scope under a parent given by id or path"""
        parent = _parent(data, default="/") or "/"
        with unit_of_work(write=True) as session:
            scope = create_scope(session, current_actor(), parent=parent, **data)
            return scope_data(session, scope)


@blp.route("/<id:scope_id>")
class ScopesById(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, ScopeSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, scope_id: int) -> dict[str, Any]:
        """Get a scope"""
        with unit_of_work() as session:
            return scope_data(session, get_scope(session, scope_id))

    @requires(blp, "admin")
    @blp.arguments(ScopeUpdateSchema)
    @blp.response(200, ScopeSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="name_in_use")
    def patch(self, data: dict[str, Any], scope_id: int) -> dict[str, Any]:
        """Rename, describe, move a scope, or assign (null: clear) its pool"""
        parent = _parent(data, default=None)
        with unit_of_work(write=True) as session:
            scope = update_scope(session, current_actor(), scope_id, parent=parent, **data)
            return scope_data(session, scope)

    @requires(blp, "admin")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="scope_not_empty")
    def delete(self, scope_id: int) -> None:
        """Delete a scope without children or allocations"""
        with unit_of_work(write=True) as session:
            delete_scope(session, current_actor(), scope_id)


__all__ = ["blp"]
