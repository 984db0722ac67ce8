"""Deleting with a confirmation page that also shows the domain's refusal."""

from __future__ import annotations

from collections.abc import Callable

from flask import flash, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from manager.core.errors import MacPoolError
from manager.services import status_of
from manager.web import unit_of_work


def confirm_and_delete(
    *,
    label: Callable[[Session], str],
    delete: Callable[[Session], None],
    action: str,
    back: str,
    done: str,
) -> ResponseReturnValue:
    """GET asks; POST deletes and goes to ``done``, or shows why the domain refused."""
    error, status = "", 200
    if request.method == "POST":
        try:
            with unit_of_work(write=True) as db:
                name = label(db)
                delete(db)
        except MacPoolError as exc:
            error, status = exc.message, status_of(exc)
        else:
            flash(f"{name[:1].upper()}{name[1:]} deleted.", "success")
            return redirect(done)
    with unit_of_work() as db:
        name = label(db)
    page = render_template(
        "ui/confirm_delete.html",
        title=f"Delete {name}",
        what=name,
        action=action,
        back=back,
        error=error,
    )
    return page, status


__all__ = ["confirm_and_delete"]
