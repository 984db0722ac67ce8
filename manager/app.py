"""The Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from manager.config import Settings, ensure_secret_key, load_settings
from manager.db import Database
from manager.plugins import enabled_plugins
from manager.web import EXTENSION_KEY, MacPoolState, state

log = logging.getLogger(__name__)


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    database: Database | None = None,
) -> Flask:
    """Build the app: settings, database, API, UI, plugins, health endpoints.

    ``test_config`` overrides settings by name (e.g. ``{"database_url": ...}``) and sets
    ``TESTING``; the schema must already be migrated (``macpool db upgrade`` or serve does it).
    """
    overrides = dict(test_config or {})
    testing = bool(overrides.pop("TESTING", test_config is not None))
    settings = settings or load_settings(overrides)
    settings = ensure_secret_key(settings)
    app = Flask(__name__)
    app.config.update(
        TESTING=testing,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        JSON_SORT_KEYS=False,
    )
    db = database or Database.from_settings(settings)
    app.extensions[EXTENSION_KEY] = MacPoolState(settings=settings, database=db)
    _register_health(app)
    _register_optional(app)
    for plugin in enabled_plugins(settings):
        plugin.init_app(app)
    return app


def _register_optional(app: Flask) -> None:
    """The API and the UI register themselves when their packages are present."""
    from importlib import import_module
    from importlib.util import find_spec

    for module, func in (("manager.api", "init_app"), ("ui", "init_app")):
        if find_spec(module) is not None:
            getattr(import_module(module), func)(app)


def _register_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """Liveness: the process serves requests."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        """Readiness: the database answers and every plugin check passes."""
        checks: dict[str, Any] = {}
        ok = True
        try:
            with state().database.session() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            log.warning("readiness: database check failed: %s", exc)
            checks["database"], ok = "unavailable", False
        for name, check in state().ready_checks.items():
            passed, detail = check()
            checks[name] = detail
            ok = ok and passed
        return jsonify(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503


__all__ = ["create_app"]
