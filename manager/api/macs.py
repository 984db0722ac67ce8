"""``/api/v1/macs/{mac}`` and ``/api/v1/duplicates``: who holds a MAC."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from werkzeug.routing import BaseConverter

from manager.api.blueprint import ApiBlueprint
from manager.api.fields import MAC_DESCRIPTION
from manager.api.paging import PAGINATE, set_total, window
from manager.api.schemas import ErrorSchema, MacInfoSchema
from manager.api_support import requires
from manager.core import MAC_PATTERN
from manager.presenters import allocation_data
from manager.services import MacInfo, list_duplicates, mac_info
from manager.web import unit_of_work

blp = ApiBlueprint("macs", __name__, url_prefix="/api/v1", description="MAC addresses")


class MacConverter(BaseConverter):
    """A path segment holding a MAC; parsed by the service, so a bad one is a clear 422."""


def mac_parameter_schema(_converter: BaseConverter) -> dict[str, str]:
    """The OpenAPI schema of a ``<mac:…>`` path parameter."""
    return {"type": "string", "pattern": MAC_PATTERN, "description": MAC_DESCRIPTION}


def mac_info_data(info: MacInfo) -> dict[str, Any]:
    """A MAC's holders and containing pool as plain data."""
    return {
        "mac": str(info.mac),
        "held": bool(info.holders),
        "holders": [allocation_data(a) for a in info.holders],
        "pool": {"id": info.pool.id, "name": info.pool.name} if info.pool else None,
    }


@blp.route("/macs/<mac:mac>")
class Macs(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, MacInfoSchema)
    @blp.alt_response(422, schema=ErrorSchema, description="invalid_mac")
    def get(self, mac: str) -> dict[str, Any]:
        """Show who holds a MAC and which pool's range contains it"""
        with unit_of_work() as session:
            return mac_info_data(mac_info(session, mac))


@blp.route("/duplicates")
class Duplicates(MethodView):
    @requires(blp, "viewer")
    @blp.response(200, MacInfoSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any) -> list[dict[str, Any]]:
        """List MACs held by more than one owner, in address order"""
        limit, offset = window(pagination_parameters)
        with unit_of_work() as session:
            page = list_duplicates(session, limit=limit, offset=offset)
            set_total(pagination_parameters, page.total)
            return [mac_info_data(info) for info in page.items]


__all__ = ["MacConverter", "blp", "mac_info_data", "mac_parameter_schema"]
