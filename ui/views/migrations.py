"""Migrations: check a plan before it runs, complete a hand-over, a MAC's history."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from manager.core.errors import InvalidInput, MacPoolError
from manager.core.mac import format_mac_int
from manager.plugins import migration_sources
from manager.presenters import migration_check_data, source_vms
from manager.services import (
    SourceVm,
    check_migration,
    complete_handovers,
    get_allocation,
    status_of,
)
from manager.web import unit_of_work
from ui.blueprint import bp
from ui.forms import FormState, text_field
from ui.security import requires, ui_actor

#: The largest plan the page takes (pasted or uploaded), bytes.
MAX_PLAN_BYTES = 4 * 1024 * 1024
EXAMPLE = (
    '{"vms": [{"id": "3d5a3a2e-…", "name": "legacy-web", '
    '"nics": [{"name": "nic1", "mac": "56:6f:1a:2b:00:01"}]}]}'
)


def _sources(pasted: str) -> list[SourceVm]:
    """The source VMs: an uploaded JSON plan or oVirt export (read by the plugin that knows
    it), else the pasted JSON plan."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return source_vms(_json(pasted))
    data = upload.stream.read(MAX_PLAN_BYTES + 1)
    if len(data) > MAX_PLAN_BYTES:
        raise InvalidInput(
            f"The file is larger than {MAX_PLAN_BYTES // 2**20} MiB: check the plan in parts.",
            field="plan",
        )
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        document = None
    if isinstance(document, list) or (isinstance(document, dict) and "vms" in document):
        return source_vms(document)
    with tempfile.TemporaryDirectory(prefix="macpool-check-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        found = migration_sources(path, filename=upload.filename)
    if found is None:
        raise InvalidInput(
            f"'{upload.filename[:100]}' is neither a JSON plan nor an export MacPool reads.",
            field="plan",
        )
    return found


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"The plan is not JSON: {exc}.", field="plan") from exc


@bp.route("/migrations/check", methods=["GET", "POST"])
@requires("viewer")  # the check writes nothing: every role may run it
def migration_check() -> ResponseReturnValue:
    """Would these VMs keep their MACs in the target scope? Per NIC; nothing is written."""
    if request.method == "GET":
        form = FormState(values={"scope": "/kubernetes/"})
        return render_template("ui/migration_check.html", form=form, result=None, example=EXAMPLE)
    form = FormState(values={"scope": text_field("scope"), "plan": request.form.get("plan", "")})
    try:
        vms = _sources(request.form.get("plan", "")[:MAX_PLAN_BYTES])
        with unit_of_work() as db:
            result = migration_check_data(check_migration(db, scope=form.value("scope"), vms=vms))
    except MacPoolError as exc:
        form.errors["scope" if exc.field == "scope" else "plan"] = exc.message
        page = render_template("ui/migration_check.html", form=form, result=None, example=EXAMPLE)
        return page, status_of(exc)
    return render_template("ui/migration_check.html", form=form, result=result, example=EXAMPLE)


@bp.post("/allocations/<int:allocation_id>/complete-handover")
@requires("operator")
def complete_handover(allocation_id: int) -> ResponseReturnValue:
    """Make one allocation's hand-over final: its source VM gives the MAC up."""
    with unit_of_work(write=True) as db:
        mac = format_mac_int(get_allocation(db, allocation_id).mac)
        done = complete_handovers(db, ui_actor(), allocation_id=allocation_id)
    if done:
        flash(f"The hand-over of {mac} is final: its source VM no longer owns it.", "success")
    else:
        flash(f"The hand-over of {mac} was not pending.", "info")
    return redirect(url_for("ui.mac_page", mac=mac))


__all__ = ["complete_handover", "migration_check"]
