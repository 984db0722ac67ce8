"""``/api/v1/allocations``: allocate (auto or requested), confirm, release, search."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from manager.api.blueprint import ApiBlueprint
from manager.api.metrics import ALLOCATION_SECONDS, ALLOCATIONS, RELEASES, observe
from manager.api.paging import PAGINATE, set_total, window
from manager.api.schemas import (
    AllocationQueryArgsSchema,
    AllocationRequestSchema,
    AllocationSchema,
    ErrorSchema,
)
from manager.api_support import current_actor, requires
from manager.core.actor import Owner
from manager.core.errors import InvalidScope
from manager.presenters import allocation_data
from manager.services import (
    allocate_mac,
    confirm_allocation,
    find_allocations,
    get_allocation,
    get_scope,
    release_allocation,
)
from manager.web import unit_of_work

blp = ApiBlueprint(
    "allocations", __name__, url_prefix="/api/v1/allocations", description="MAC allocations"
)


def _scope(data: dict[str, Any]) -> int | str:
    """The scope given as ``scope_id`` or ``scope`` (a path), never both; the engine by default."""
    scope_id, path = data.pop("scope_id", None), data.pop("scope", None)
    if scope_id is not None and path is not None:
        raise InvalidScope("Give the scope as scope_id or as scope (a path), not both.")
    return scope_id if scope_id is not None else path or "/"


@blp.route("")
class Allocations(MethodView):
    @requires(blp, "viewer")
    @blp.arguments(AllocationQueryArgsSchema(), location="query")
    @blp.response(200, AllocationSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, args: dict[str, Any], pagination_parameters: Any) -> list[dict[str, Any]]:
        """Search allocations, ordered by MAC then id"""
        limit, offset = window(pagination_parameters)
        with unit_of_work() as session:
            if "scope" in args:  # a path: resolved here, so an unknown one is a 404
                args["scope_id"] = get_scope(session, _scope(args)).id
            page = find_allocations(session, limit=limit, offset=offset, **args)
            set_total(pagination_parameters, page.total)
            return [allocation_data(a) for a in page.items]

    @requires(blp, "operator")
    @blp.arguments(AllocationRequestSchema())
    @blp.response(201, AllocationSchema, description="A MAC was allocated")
    @blp.alt_response(
        200,
        schema=AllocationSchema,
        success=True,
        description="The owner's interface already held this MAC (an idempotent repeat)",
    )
    @blp.alt_response(404, schema=ErrorSchema, description="The scope does not exist")
    @blp.alt_response(
        409, schema=ErrorSchema, description="mac_in_use, interface_in_use or pool_exhausted"
    )
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Allocate a MAC to an owner's interface, the next free one or the one requested"""
        scope = _scope(data)
        owner = Owner(**data.pop("owner"))
        with observe(ALLOCATIONS, ALLOCATION_SECONDS) as outcome:
            with unit_of_work(write=True) as session:
                result = allocate_mac(session, current_actor(), scope=scope, owner=owner, **data)
                body = allocation_data(result.allocation)
            outcome.result = "created" if result.created else "existing"
        return body, 201 if result.created else 200


@blp.route("/<id:allocation_id>")
class AllocationsById(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, AllocationSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, allocation_id: int) -> dict[str, Any]:
        """Get an allocation"""
        with unit_of_work() as session:
            return allocation_data(get_allocation(session, allocation_id))

    @requires(blp, "operator")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    def delete(self, allocation_id: int) -> None:
        """Release an allocation; a MAC shared by duplicates stays held by the others"""
        with observe(RELEASES) as outcome:
            with unit_of_work(write=True) as session:
                release_allocation(session, current_actor(), allocation_id)
            outcome.result = "released"


@blp.route("/<id:allocation_id>/confirm")
class AllocationConfirm(MethodView):
    @requires(blp, "operator")
    @blp.response(200, AllocationSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="invalid_state: not pending")
    def post(self, allocation_id: int) -> dict[str, Any]:
        """Confirm a pending allocation so that it no longer expires"""
        with unit_of_work(write=True) as session:
            return allocation_data(confirm_allocation(session, current_actor(), allocation_id))


__all__ = ["blp"]
