"""``/api/v1/events``: the audit log, newest first."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from manager.api.blueprint import ApiBlueprint
from manager.api.paging import PAGINATE, set_total, window
from manager.api.schemas import EventQueryArgsSchema, EventSchema
from manager.api_support import requires
from manager.db import AuditEvent
from manager.services import list_events
from manager.web import unit_of_work

blp = ApiBlueprint("events", __name__, url_prefix="/api/v1/events", description="Audit log")


def event_data(event: AuditEvent) -> dict[str, Any]:
    """An audit event as plain data."""
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target": event.target,
        "severity": event.severity,
        "details": event.details,
    }


@blp.route("")
class Events(MethodView):
    @requires(blp, "viewer")
    @blp.arguments(EventQueryArgsSchema, location="query")
    @blp.response(200, EventSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, args: dict[str, Any], pagination_parameters: Any) -> list[dict[str, Any]]:
        """List audit events, newest first"""
        limit, offset = window(pagination_parameters)
        with unit_of_work() as session:
            page = list_events(session, limit=limit, offset=offset, **args)
            set_total(pagination_parameters, page.total)
            return [event_data(e) for e in page.items]


__all__ = ["blp", "event_data"]
