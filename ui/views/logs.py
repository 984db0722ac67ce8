"""Read-only lists: MACs held more than once, and the audit log with filters."""

from __future__ import annotations

from flask import render_template, request
from flask.typing import ResponseReturnValue

from manager.services import SEVERITIES, list_duplicates, list_events
from manager.web import unit_of_work
from ui.blueprint import bp
from ui.paging import Pager, requested_page, window


@bp.get("/duplicates")
def duplicates() -> ResponseReturnValue:
    """MACs held by more than one owner, with every holder."""
    with unit_of_work() as db:
        result = list_duplicates(db, **window(requested_page()))
        return render_template(
            "ui/duplicates.html", items=result.items, pager=Pager.of(result, "ui.duplicates")
        )


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    """The audit log, newest first, filtered by action (prefix), actor and severity."""
    filters = {
        "action": request.args.get("action", "").strip()[:64],
        "actor": request.args.get("actor", "").strip()[:255],
        "severity": request.args.get("severity", ""),
    }
    if filters["severity"] not in SEVERITIES:
        filters["severity"] = ""
    with unit_of_work() as db:
        result = list_events(
            db,
            action=filters["action"] or None,
            actor=filters["actor"] or None,
            severity=filters["severity"] or None,
            **window(requested_page()),
        )
        return render_template(
            "ui/audit.html",
            events=result.items,
            pager=Pager.of(result, "ui.audit", **filters),
            filters=filters,
            severities=SEVERITIES,
        )
