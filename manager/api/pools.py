"""``/api/v1/pools``: pools with their ranges and statistics, and one-range edits."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from manager.api.blueprint import ApiBlueprint
from manager.api.paging import PAGINATE, page_of
from manager.api.schemas import (
    ErrorSchema,
    PoolCreateSchema,
    PoolSchema,
    PoolUpdateSchema,
    RangeSchema,
)
from manager.api_support import current_actor, requires
from manager.presenters import pool_data
from manager.services import (
    add_range,
    create_pool,
    delete_pool,
    get_pool,
    list_pools,
    remove_range,
    update_pool,
)
from manager.web import unit_of_work

blp = ApiBlueprint("pools", __name__, url_prefix="/api/v1/pools", description="MAC pools")


@blp.route("")
class Pools(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, PoolSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any) -> list[dict[str, Any]]:
        """List pools, the default first, then by name"""
        with unit_of_work() as session:
            pools = page_of(list_pools(session), pagination_parameters)
            return [pool_data(session, pool) for pool in pools]

    @requires(blp, "admin")
    @blp.arguments(PoolCreateSchema)
    @blp.response(201, PoolSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="name_in_use or range_overlap")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a pool"""
        with unit_of_work(write=True) as session:
            pool = create_pool(session, current_actor(), **data)
            return pool_data(session, pool)


@blp.route("/<id:pool_id>")
class PoolsById(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, PoolSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, pool_id: int) -> dict[str, Any]:
        """Get a pool with its ranges and statistics"""
        with unit_of_work() as session:
            return pool_data(session, get_pool(session, pool_id))

    @requires(blp, "admin")
    @blp.arguments(PoolUpdateSchema)
    @blp.response(200, PoolSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(
        409, schema=ErrorSchema, description="name_in_use, range_overlap or duplicates_exist"
    )
    def patch(self, data: dict[str, Any], pool_id: int) -> dict[str, Any]:
        """Change a pool's name, description, duplicates policy or ranges"""
        with unit_of_work(write=True) as session:
            pool = update_pool(session, current_actor(), pool_id, **data)
            return pool_data(session, pool)

    @requires(blp, "admin")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="pool_in_use")
    def delete(self, pool_id: int) -> None:
        """Delete a pool that is not the default, not assigned and holds no MAC"""
        with unit_of_work(write=True) as session:
            delete_pool(session, current_actor(), pool_id)


@blp.route("/<id:pool_id>/ranges")
class PoolRanges(MethodView):
    @requires(blp, "admin")
    @blp.arguments(RangeSchema)
    @blp.response(201, RangeSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="range_overlap")
    def post(self, data: dict[str, str], pool_id: int) -> dict[str, Any]:
        """Add a range to a pool"""
        with unit_of_work(write=True) as session:
            row = add_range(session, current_actor(), pool_id, data)
            ranges: list[dict[str, Any]] = pool_data(session, row.pool)["ranges"]
            return next(r for r in ranges if r["id"] == row.id)


@blp.route("/<id:pool_id>/ranges/<id:range_id>")
class PoolRangesById(MethodView):
    @requires(blp, "admin")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="invalid_range: the last range")
    def delete(self, pool_id: int, range_id: int) -> None:
        """Remove a range from a pool (a pool keeps at least one); held MACs stay held"""
        with unit_of_work(write=True) as session:
            remove_range(session, current_actor(), pool_id, range_id)


__all__ = ["blp"]
