"""Who is logged in, what their role lets them do, CSRF on every form, login throttling.

Every request to the blueprint passes :func:`guard_request`: it loads the user from the
session, refuses anonymous access to non-public pages, checks the CSRF token of every POST
and checks the role the view declares (POSTs without a declaration need ``admin``), so a
view cannot forget a check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from manager.core.actor import Actor
from manager.services import User, role_allows
from manager.web import unit_of_work
from ui.blueprint import NAV_KEY

F = TypeVar("F", bound=Callable[..., Any])

CSRF_FIELD = "csrf_token"
CSRF_MESSAGE = (
    "The form's security token is missing, expired or not from this site. "
    "Reload the page and submit the form again."
)


@dataclass(frozen=True, slots=True)
class CurrentUser:
    id: int
    username: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user has at least the rights of ``role``."""
        return role_allows(self.role, role)


def requires(role: str) -> Callable[[F], F]:
    """Declare the least role a view needs (checked by :func:`guard_request`)."""

    def mark(view: F) -> F:
        view.ui_role = role  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    """Mark a view reachable without logging in (the login page)."""
    view.ui_public = True  # type: ignore[attr-defined]
    return view


def current_user() -> CurrentUser | None:
    """The logged-in user of this request, if any."""
    found: CurrentUser | None = g.get("ui_user")
    return found


def ui_actor() -> Actor:
    """The audit actor of this request's user."""
    user = current_user()
    if user is None:  # guard_request never lets an anonymous request reach a write
        abort(403)
    return Actor(user.username, "user")


def log_in(user: User) -> None:
    """Start a fresh session for ``user`` (a new CSRF token comes with it)."""
    session.clear()
    session["uid"] = user.id
    session.permanent = False


def log_out() -> None:
    session.clear()


def _load_user() -> CurrentUser | None:
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    with unit_of_work() as db:
        user = db.get(User, uid)
        # A disabled or deleted account loses its open sessions at the next request.
        if user is None or user.disabled:
            session.clear()
            return None
        return CurrentUser(id=user.id, username=user.username, role=user.role)


def guard_request() -> ResponseReturnValue | None:
    """The blueprint's before_request hook: login, CSRF, role."""
    if request.endpoint in (None, "ui.static"):
        return None
    g.ui_user = _load_user()
    view = current_app.view_functions.get(request.endpoint or "")
    if g.ui_user is None and not getattr(view, "ui_public", False):
        if request.method == "POST":
            abort(403)
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    if request.method == "POST":
        try:
            validate_csrf(request.form.get(CSRF_FIELD))
        except ValidationError:
            abort(400, description=CSRF_MESSAGE)
    if g.ui_user is not None and not getattr(view, "ui_public", False):
        required = getattr(view, "ui_role", None) or (
            "admin" if request.method == "POST" else "viewer"
        )
        if not g.ui_user.can(required):
            abort(403)
    return None


def _may_open(user: CurrentUser | None, endpoint: str) -> bool:
    """Whether ``user`` may open the page at ``endpoint`` (its declared role, else viewer)."""
    view = current_app.view_functions.get(endpoint)
    return user is not None and user.can(getattr(view, "ui_role", None) or "viewer")


def template_globals() -> dict[str, Any]:
    """What every template may use: the user, a role test, the CSRF token and the plugin
    menu entries (only those whose page the user's role may open)."""
    user = current_user()
    return {
        "user": user,
        "can": lambda role: user is not None and user.can(role),
        "csrf_token": generate_csrf,
        "plugin_nav": [
            (label, endpoint)
            for label, endpoint in current_app.extensions.get(NAV_KEY, [])
            if _may_open(user, endpoint)
        ],
    }


__all__ = [
    "CSRF_FIELD",
    "CurrentUser",
    "current_user",
    "guard_request",
    "log_in",
    "log_out",
    "public",
    "requires",
    "template_globals",
    "ui_actor",
]
