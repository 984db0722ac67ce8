"""The Blueprint every API resource uses: flask-smorest's, with a JSON body that is required."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError
from webargs import missing
from webargs.flaskparser import FlaskParser, abort


class JsonBodyParser(FlaskParser):
    """A body that is absent, or not sent as JSON, is an error instead of an empty object.

    Without this a PATCH sent without ``Content-Type: application/json`` would change nothing
    and still answer 200, hiding the client's mistake. A body nested deeper than the JSON
    parser can recurse is unreadable like any other invalid JSON (400), not a server error.
    """

    def _raw_load_json(self, req: Any) -> Any:
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            abort(400, messages={"json": ["The JSON body is nested too deeply."]})

    def load_json(self, req: Any, schema: Schema) -> Any:
        data = super().load_json(req, schema)
        if data is missing:
            raise ValidationError(
                "A JSON request body is required; send it with Content-Type: application/json."
            )
        return data


#: The ``X-Pagination`` header as it is sent: flask-smorest writes the metadata as JSON text
#: (OpenAPI's ``simple`` header style would be ``total,3,page,1``), so it is a string here.
PAGINATION_HEADER_ID = "PaginationJSON"
PAGINATION_HEADER = {
    "description": "Pagination metadata as a JSON object: total, total_pages, first_page, "
    "last_page, page, and previous_page/next_page when there is one "
    '(e.g. {"total": 120, "total_pages": 3, "first_page": 1, "last_page": 3, "page": 1, '
    '"next_page": 2}).',
    "schema": {"type": "string", "pattern": "^\\{.*\\}$"},
}


class ApiBlueprint(Blueprint):  # type: ignore[misc]  # flask-smorest ships no type hints
    """One resource of ``/api/v1``."""

    ARGUMENTS_PARSER = JsonBodyParser()

    def _document_pagination_metadata(self, spec: Any, resp_doc: dict[str, Any]) -> None:
        resp_doc.setdefault("headers", {})[self.PAGINATION_HEADER_NAME] = PAGINATION_HEADER_ID


__all__ = ["PAGINATION_HEADER", "PAGINATION_HEADER_ID", "ApiBlueprint", "JsonBodyParser"]
