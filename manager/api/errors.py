"""The REST API's error handlers.

Every error the API answers with has one shape, documented as ``ErrorSchema``:
``{"code", "status", "message", "reason", "errors"}``. Domain errors and database outages
answer from the one table of every channel (:mod:`manager.services.errors`: families choose the
status, leaves the ``reason``; an outage is a 503 with ``Retry-After``); HTTP errors raised by
Flask, werkzeug or webargs get a reason from their status; anything unexpected becomes a 500
that tells nothing of the internals.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from marshmallow import Schema
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from manager.api.fields import Mac
from manager.core.errors import DatabaseUnavailable, InvalidMac, MacPoolError
from manager.services.errors import STATUS_BY_FAMILY, AnsweredError, answer_for

log = logging.getLogger(__name__)

API_PREFIX = "/api"

#: The ``reason`` of errors that do not come from the domain, by HTTP status.
REASON_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "database_unavailable",
}


def error_response(
    code: int,
    *,
    message: str,
    reason: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON response in the API's one error shape."""
    response = jsonify(
        code=code,
        status=http.HTTPStatus(code).phrase,
        message=message,
        reason=reason,
        errors=errors or {},
    )
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_domain_error(error: AnsweredError) -> Response:
    """A domain error or an outage: status and reason from the table, details as ``errors``."""
    answer = answer_for(error)
    if isinstance(error, DatabaseUnavailable):
        log.warning("database unavailable on %s %s: %s", request.method, request.path, error.detail)
    errors: dict[str, Any] = dict(answer.details)
    if answer.input_field:
        errors["field"] = answer.input_field
    headers = {} if answer.retry_after is None else {"Retry-After": str(answer.retry_after)}
    return error_response(
        answer.status, message=answer.message, reason=answer.reason, errors=errors, headers=headers
    )


def _is_api_request() -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


def _validation_reason(data: dict[str, Any]) -> str:
    """``invalid_mac`` when every rejected field is a MAC field, else ``validation_error``."""
    schema, messages = data.get("schema"), data.get("messages")
    if not isinstance(schema, Schema) or not isinstance(messages, dict):
        return REASON_BY_STATUS[422]
    by_key = {f.data_key or name: f for name, f in schema.fields.items()}
    # webargs nests the field messages under their location ("json", "query", ...).
    rejected = [name for fields in messages.values() if isinstance(fields, dict) for name in fields]
    if rejected and all(isinstance(by_key.get(name), Mac) for name in rejected):
        return InvalidMac.reason
    return REASON_BY_STATUS[422]


def _field_problems(fields: dict[Any, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field path, its problems as text) of marshmallow's nested error messages."""
    found: list[tuple[str, str]] = []
    for key, problems in fields.items():
        name = prefix if key == "_schema" else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(problems, dict):
            found.extend(_field_problems(problems, name))
        elif isinstance(problems, list):
            found.append((name, "; ".join(str(p) for p in problems)))
        else:
            found.append((name, str(problems)))
    return found


def _validation_message(errors: dict[str, Any]) -> str:
    """One sentence naming each rejected parameter and why (webargs nests by location).

    Nested fields are named by their path, e.g. ``json field 'ranges.0.start'``.
    """
    parts: list[str] = []
    for location, fields in errors.items():
        if not isinstance(fields, dict):
            parts.append(f"{location}: {fields}")
            continue
        for name, text in _field_problems(fields):
            parts.append(f"{location} field '{name}': {text}")
    if not parts:
        return "The request is not valid."
    return "The request is not valid: " + " ".join(p if p.endswith(".") else p + "." for p in parts)


def _http_message(error: HTTPException) -> str:
    code = error.code or 500
    if code == 404:
        return (
            f"There is no API resource at {request.path}; "
            f"see {API_PREFIX}/docs for the available paths."
        )
    if code == 405 and isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or []))
        return f"Method {request.method} is not allowed on {request.path}; use {allowed}."
    if code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return f"The request body is larger than the limit of {limit} bytes."
    if code == 400:
        return "The request could not be read: send a JSON body with Content-Type application/json."
    if code == 415:
        return "The request body must be JSON (Content-Type: application/json)."
    return error.description or http.HTTPStatus(code).phrase


def handle_http_error(error: HTTPException) -> Response | HTTPException:
    """HTTP errors of API paths in the error shape; other paths keep Flask's own page."""
    if not _is_api_request():
        return error
    code = error.code or 500
    data: dict[str, Any] = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        # flask-smorest drops the Allow header that RFC 9110 requires on a 405.
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    errors = data.get("errors") or data.get("messages") or {}
    if code == 422 and "messages" in data:
        reason = _validation_reason(data)
        message = _validation_message(errors)
    else:
        reason = data.get("reason") or REASON_BY_STATUS.get(code, "error")
        message = data.get("message") or _http_message(error)
    return error_response(code, message=message, reason=reason, errors=errors, headers=headers)


def handle_unexpected(error: Exception) -> Response:
    """A bug or an outage: log it, answer 500 in the error shape without internals."""
    if not _is_api_request():
        raise error
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(
        500,
        message="An unexpected error occurred and has been logged; try again, and tell "
        "the administrator if it persists.",
        reason=REASON_BY_STATUS[500],
    )


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; they replace flask-smorest's HTTP handler, so call this after it."""
    app.register_error_handler(MacPoolError, handle_domain_error)
    app.register_error_handler(DatabaseUnavailable, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)


__all__ = [
    "REASON_BY_STATUS",
    "STATUS_BY_FAMILY",
    "error_response",
    "handle_domain_error",
    "handle_http_error",
    "handle_unexpected",
    "register_error_handlers",
]
