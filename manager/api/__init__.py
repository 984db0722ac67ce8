"""The REST management API (``/api/v1``), its OpenAPI document, docs page and metrics.

``init_app(app)`` is called by the app factory. The OpenAPI 3 document is served at
``/api/openapi.json`` and Swagger UI at ``/api/docs``, with Swagger UI's files served from the
installed ``swagger_ui_bundle`` package, so the page works without internet access.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, send_from_directory
from flask_smorest import Api
from flask_smorest.spec.plugins import integerconverter2paramschema
from swagger_ui_bundle import swagger_ui_path

from manager.api import allocations, events, macs, migrations, pools, scopes
from manager.api.blueprint import PAGINATION_HEADER, PAGINATION_HEADER_ID
from manager.api.errors import register_error_handlers
from manager.api.fields import ExclusiveFieldsPlugin, IdConverter
from manager.api.metrics import init_metrics
from manager.api.schemas import ErrorSchema
from manager.api_support import (
    FORBIDDEN_RESPONSE,
    SECURITY_SCHEME,
    UNAUTHORIZED_RESPONSE,
    UNAVAILABLE_RESPONSE,
)

API_VERSION = "v1"
DOCS_ASSETS = "/api/docs/assets/"
BLUEPRINTS = (pools.blp, scopes.blp, allocations.blp, macs.blp, events.blp, migrations.blp)


class MacPoolApi(Api):  # type: ignore[misc]  # flask-smorest ships no type hints
    """flask-smorest's Api documenting our error shape (with ``reason``) on every operation."""

    ERROR_SCHEMA = ErrorSchema


def _config(app: Flask) -> None:
    app.config.update(
        API_TITLE="MacPool",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=DOCS_ASSETS,
        API_SPEC_OPTIONS={
            "info": {
                "description": "Pools, ranges, scopes and MAC allocations of MacPool. Send "
                "'Authorization: Bearer <token>' (macpool token create --role ROLE --name NAME)."
            },
        },
    )


def _error_response(
    description: str, *, www_authenticate: bool = False, retry_after: bool = False
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ErrorSchema}},
    }
    headers: dict[str, Any] = {}
    if www_authenticate:
        headers["WWW-Authenticate"] = {
            "description": "The Bearer challenge (RFC 6750)",
            "schema": {"type": "string"},
        }
    if retry_after:
        headers["Retry-After"] = {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    if headers:
        response["headers"] = headers
    return response


def _document(api: Api) -> None:
    components = api.spec.components
    components.security_scheme(SECURITY_SCHEME, {"type": "http", "scheme": "bearer"})
    components.header(PAGINATION_HEADER_ID, PAGINATION_HEADER)
    components.response(
        UNAUTHORIZED_RESPONSE,
        _error_response("No token, or an unknown or revoked one", www_authenticate=True),
    )
    components.response(
        FORBIDDEN_RESPONSE, _error_response("The token's role is too weak", www_authenticate=True)
    )
    components.response(
        UNAVAILABLE_RESPONSE,
        _error_response(
            "database_unavailable: the database is down, hung or busy; nothing was changed. "
            "Retry after the Retry-After seconds.",
            retry_after=True,
        ),
    )


def _register_docs_assets(app: Flask) -> None:
    @app.get(DOCS_ASSETS + "<path:filename>")
    def swagger_ui_assets(filename: str) -> Response:
        """Swagger UI's JavaScript and CSS from the installed package (never a CDN)."""
        return send_from_directory(str(swagger_ui_path), filename)


def init_app(app: Flask) -> None:
    """Register the API blueprints, the OpenAPI document and docs page, errors and metrics."""
    _config(app)
    app.url_map.converters["mac"] = macs.MacConverter
    app.url_map.converters["id"] = IdConverter
    api = MacPoolApi(app, spec_kwargs={"extra_plugins": [ExclusiveFieldsPlugin()]})
    api.register_converter(macs.MacConverter, macs.mac_parameter_schema)
    api.register_converter(IdConverter, integerconverter2paramschema)
    _document(api)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    register_error_handlers(app)
    _register_docs_assets(app)
    init_metrics(app)


__all__ = ["API_VERSION", "MacPoolApi", "init_app"]
