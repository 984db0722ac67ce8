"""The one UI blueprint; the views modules attach their routes to it."""

from __future__ import annotations

from flask import Blueprint

#: ``app.extensions[NAV_KEY]`` is a list of (label, endpoint) a plugin may append to.
NAV_KEY = "macpool.ui_nav"

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/ui/static",
)

__all__ = ["NAV_KEY", "bp"]
