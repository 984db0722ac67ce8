"""The UI's error pages and form statuses.

Domain errors and database outages answer from the one table of every channel
(:mod:`manager.services.errors`); HTTP errors keep their status.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, current_app, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from manager.core.errors import DatabaseUnavailable, MacPoolError
from manager.services import AnsweredError, answer_for
from ui.blueprint import bp
from ui.security import template_globals

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Upload too large",
    422: "Cannot accept this input",
    500: "Something went wrong",
    503: "Database unavailable",
}
EXPLANATIONS = {
    403: "Your account's role does not allow this. Ask an administrator if you need it.",
    404: "There is nothing at this address.",
    500: "MacPool could not finish this request; nothing was changed. The server log has details.",
}
#: Paths served by other channels: their errors are not the UI's to render.
FOREIGN_PREFIXES = ("/api", "/mutate-", "/metrics", "/healthz", "/readyz")


def error_page(
    status: int, message: str | None = None, *, retry_after: int | None = None
) -> ResponseReturnValue:
    """An error page in the UI's style."""
    text = message or EXPLANATIONS.get(status, "")
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return (
        render_template(
            "ui/error.html",
            status=status,
            title=TITLES.get(status, "Error"),
            message=text,
            **template_globals(),
        ),
        status,
        headers,
    )


@bp.errorhandler(MacPoolError)
@bp.errorhandler(DatabaseUnavailable)
def _domain_error(exc: AnsweredError) -> ResponseReturnValue:
    answer = answer_for(exc)
    if isinstance(exc, DatabaseUnavailable):
        log.warning(
            "UI request %s %s: database unavailable: %s", request.method, request.path, exc.detail
        )
    return error_page(answer.status, answer.message, retry_after=answer.retry_after)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    code = exc.code or 500
    if code == 500:
        return _server_error(exc)
    # werkzeug's generic descriptions are too technical; keep ours unless a view set one.
    default = type(exc).description
    message = exc.description if exc.description != default else None
    return error_page(code, message)


@bp.errorhandler(InternalServerError)
def _server_error(exc: HTTPException) -> ResponseReturnValue:
    original: Any = getattr(exc, "original_exception", None)
    if original is not None:
        log.error("UI request %s %s failed", request.method, request.path, exc_info=original)
    return error_page(500)


def _other_handler(exc: HTTPException) -> Any:
    """A handler another component registered for a base class of ``exc`` (e.g. the API's)."""
    handlers = current_app.error_handler_spec.get(None, {}).get(None, {})
    for cls in type(exc).__mro__[1:]:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def _unmatched(exc: NotFound) -> ResponseReturnValue:
    """A URL no route matched: a UI page for browsers, the other channels' answer otherwise."""
    wants_html = request.accept_mimetypes.best_match(["application/json", "text/html"]) == (
        "text/html"
    )
    if wants_html and not request.path.startswith(FOREIGN_PREFIXES):
        return error_page(404)
    handler = _other_handler(exc)
    return handler(exc) if handler is not None else exc


def install_error_pages(blueprint: Blueprint) -> None:
    """Give another blueprint (a plugin's pages) the UI's error pages."""
    blueprint.register_error_handler(MacPoolError, _domain_error)
    blueprint.register_error_handler(DatabaseUnavailable, _domain_error)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(InternalServerError, _server_error)


def register_app_handlers(app: Flask) -> None:
    """Errors outside the blueprint: only URLs that match no route at all."""
    app.register_error_handler(NotFound, _unmatched)


__all__ = ["error_page", "install_error_pages", "register_app_handlers"]
