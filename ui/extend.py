"""The hook through which a plugin adds its own pages to the UI.

A plugin builds its own Flask blueprint and passes it to :func:`adopt_blueprint`: its pages
then pass the same login, role and CSRF checks as the UI's (declare roles with
:func:`ui.security.requires`), see the same template globals (so templates can extend
``ui/base.html``) and answer errors with the UI's error pages. A menu entry is added with
:func:`add_nav_entry`; it is shown only to users whose role may open the page.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from ui.blueprint import NAV_KEY
from ui.errors import install_error_pages
from ui.security import guard_request, template_globals


def adopt_blueprint(blueprint: Blueprint) -> None:
    """Guard ``blueprint`` like the UI's own pages (call before registering it)."""
    blueprint.before_request(guard_request)
    blueprint.context_processor(template_globals)
    install_error_pages(blueprint)


def add_nav_entry(app: Flask, label: str, endpoint: str) -> None:
    """Add a plugin page to the main menu (once, however often the plugin initializes)."""
    entries: list[tuple[str, str]] = app.extensions.setdefault(NAV_KEY, [])
    if (label, endpoint) not in entries:
        entries.append((label, endpoint))


__all__ = ["add_nav_entry", "adopt_blueprint"]
