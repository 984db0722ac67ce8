"""``/api/v1/migrations``: check a migration before it runs, complete its hand-overs."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from manager.api.blueprint import ApiBlueprint
from manager.api.schemas import (
    AllocationSchema,
    ErrorSchema,
    HandoverCompleteRequestSchema,
    MigrationCheckRequestSchema,
)
from manager.api_support import MigrationCheckSchema, current_actor, requires
from manager.presenters import allocation_data, migration_check_data, source_vms
from manager.services import complete_handovers, get_scope
from manager.services.migration_check import check_migration
from manager.web import unit_of_work

blp = ApiBlueprint(
    "migrations",
    __name__,
    url_prefix="/api/v1/migrations",
    description="Moving VMs with their MACs (oVirt → KubeVirt, KubeVirt → KubeVirt)",
)


@blp.route("/check")
class MigrationCheck(MethodView):
    @requires(blp, "viewer")
    @blp.arguments(MigrationCheckRequestSchema)
    @blp.response(200, MigrationCheckSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="A malformed MAC, VM or scope")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Would these VMs' MACs move into the target scope? Per NIC; writes nothing"""
        with unit_of_work() as session:
            check = check_migration(session, scope=data["scope"], vms=source_vms(data["vms"]))
        return migration_check_data(check)


@blp.route("/complete")
class HandoverComplete(MethodView):
    @requires(blp, "operator")
    @blp.arguments(HandoverCompleteRequestSchema)
    @blp.response(200, AllocationSchema(many=True))
    @blp.alt_response(404, schema=ErrorSchema, description="The scope does not exist")
    @blp.alt_response(422, schema=ErrorSchema, description="Not exactly one selector")
    def post(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Make hand-overs final (per plan, allocation or VM): the source VM gives up the MACs"""
        with unit_of_work(write=True) as session:
            scope_id = None
            if data.get("scope") is not None:
                scope_id = get_scope(session, data["scope"]).id
            done = complete_handovers(
                session,
                current_actor(),
                plan=data.get("plan"),
                allocation_id=data.get("allocation_id"),
                scope_id=scope_id,
                owner_name=data.get("owner_name"),
            )
            return [allocation_data(a) for a in done]


__all__ = ["blp"]
