"""The web admin UI: server-rendered pages over ``manager.services``.

``manager.app`` calls :func:`init_app` when this package is installed. The UI never holds a
domain rule: every page calls the same service functions as the API, the CLI and the plugins.
"""

from __future__ import annotations

from flask import Flask

from ui.blueprint import NAV_KEY, bp
from ui.errors import register_app_handlers

__all__ = ["NAV_KEY", "init_app"]


def init_app(app: Flask) -> None:
    """Register the UI blueprint, its session-cookie policy and the plugin navigation list.

    Plugins add a menu entry with ``app.extensions["macpool.ui_nav"].append((label, endpoint))``.
    """
    # The session cookie carries the login: keep it away from scripts and cross-site posts.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.extensions.setdefault(NAV_KEY, [])
    # Importing the views attaches their routes to the blueprint (once per process).
    from ui import views  # noqa: F401

    app.register_blueprint(bp)
    register_app_handlers(app)
