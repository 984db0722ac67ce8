"""Login and logout."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from manager.services import LoginThrottle, authenticate_user
from manager.web import unit_of_work
from ui.blueprint import bp
from ui.forms import FORM, FormState, text_field
from ui.security import current_user, log_in, log_out, public, requires

THROTTLE_KEY = "macpool.ui_login_throttle"
#: Seconds added to every failed login; tests set MACPOOL_UI_LOGIN_DELAY to 0.
DEFAULT_FAILURE_DELAY = 0.5
FAILED = "Unknown username or wrong password."
BLOCKED = "Too many failed logins; wait a few minutes and try again."


def _throttle() -> LoginThrottle:
    """The app's login throttle; its failures live in the database, shared by all workers."""
    found: LoginThrottle | None = current_app.extensions.get(THROTTLE_KEY)
    if found is None:
        secret = str(current_app.config["SECRET_KEY"]).encode()
        found = current_app.extensions[THROTTLE_KEY] = LoginThrottle(secret)
    return found


def _safe_next(target: str | None) -> str:
    """Only a local path: an attacker's link must not bounce the user off-site."""
    if not target:
        return url_for("ui.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("ui.dashboard")
    return target


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    """Log in with a UI account; the error never says whether the user exists."""
    next_url = request.values.get("next", "")
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_safe_next(next_url))
        return render_template("ui/login.html", form=FormState(), next=next_url)
    username = text_field("username")[:150]
    password = request.form.get("password", "")[:1024]
    throttle = _throttle()
    keys = throttle.keys(username, request.remote_addr)
    form = FormState(values={"username": username})
    with unit_of_work() as db:
        failures = throttle.recent_failures(db, keys)
        if failures >= throttle.max_failures:
            form.errors[FORM] = BLOCKED
            return render_template("ui/login.html", form=form, next=next_url), 429
        user = authenticate_user(db, username, password)
        if user is not None:
            log_in(user)
    if user is None:
        with unit_of_work(write=True) as db:
            throttle.failed(db, keys)
        time.sleep(float(current_app.config.get("MACPOOL_UI_LOGIN_DELAY", DEFAULT_FAILURE_DELAY)))
        form.errors[FORM] = FAILED
        return render_template("ui/login.html", form=form, next=next_url), 401
    if failures:
        with unit_of_work(write=True) as db:
            throttle.succeeded(db, keys)
    return redirect(_safe_next(next_url))


@bp.post("/logout")
@requires("viewer")
def logout() -> ResponseReturnValue:
    """End the session."""
    log_out()
    flash("You are logged out.", "info")
    return redirect(url_for("ui.login"))
