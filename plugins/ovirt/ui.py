"""The admin UI's import page for oVirt exports: upload, dry run, review, apply.

The plugin registers these pages when the admin UI is part of the app; they pass the UI's
login, role and CSRF checks (``ui.extend.adopt_blueprint``). An operator may upload an export
and see the dry-run report; an administrator may apply it. Applying runs the importer again
on the same bytes (never replays the dry-run report), in one transaction.

Between the dry run and the apply the upload stays on the server as
``<data dir>/ovirt-uploads/<token>.upload``. The random token is remembered in the user's
signed session and sent back by the review form; a token the session does not hold is
refused, so a client can never name a file. A file is deleted once applied, when the session
holds newer uploads, and an hour after it was uploaded.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from flask import (
    Blueprint,
    Flask,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from manager.core.errors import MacPoolError
from manager.services import get_job, is_interrupted, list_scopes, status_of
from manager.web import settings, unit_of_work
from plugins.ovirt.background import IMPORTING, READING, WRITING, start_background_import
from plugins.ovirt.backup import is_backup
from plugins.ovirt.importer import ImportOptions, ImportRefused, import_in_phases
from plugins.ovirt.reader import read_upload
from plugins.ovirt.records import OvirtExport
from plugins.ovirt.report import ImportReport
from plugins.ovirt.web import MAX_UPLOAD_KEY, max_upload
from ui.errors import error_page
from ui.extend import add_nav_entry, adopt_blueprint
from ui.forms import FORM, FormState, checkbox, place_error, text_field
from ui.security import requires, ui_actor

bp = Blueprint("ovirt_ui", __name__, template_folder="templates", url_prefix="/import")

#: Menu label of the page.
NAV_LABEL = "Import"
#: Folder under the data dir holding uploads between dry run and apply.
UPLOAD_DIR = "ovirt-uploads"
SESSION_KEY = "ovirt_uploads"
#: Seconds an upload is kept for its apply.
UPLOAD_TTL = 3600
#: Uploads one session may keep at once; older ones are deleted.
KEPT_PER_SESSION = 3
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
FIELDS = ("file", "scope")
#: VMs listed in the report table; the totals always count all of them.
VM_ROWS = 500
#: Uploads larger than this (and every engine backup) are imported in the background.
BACKGROUND_BYTES = 32 * 1024 * 1024
#: Seconds between two refreshes of a running job's status page.
REFRESH_SECONDS = 2
PHASES = {
    "queued": "Queued",
    READING: "Reading the upload",
    IMPORTING: "Importing",
    WRITING: "Writing the allocations",
}
INTERRUPTED = (
    "The import was interrupted (the server process running it stopped); nothing of it is kept "
    "(allocations a large import had written are pending and expire within the hour). "
    "Upload the file again."
)


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """An upload kept for its apply: the token the session knows and the original name."""

    token: str
    filename: str
    path: Path


def _upload_dir() -> Path:
    folder = settings().data_dir / UPLOAD_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _path_of(token: str) -> Path:
    return _upload_dir() / f"{token}.upload"


def _sweep(folder: Path) -> None:
    """Delete every upload older than the TTL, whoever left it."""
    cutoff = time.time() - UPLOAD_TTL
    for path in folder.glob("*.upload"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:  # another request swept it first
            continue


def _session_uploads() -> list[list[str]]:
    # A list of [token, filename], oldest first (a list keeps its order in the cookie).
    entries = session.get(SESSION_KEY, [])
    return [e for e in entries if isinstance(e, list) and len(e) == 2] if entries else []


def store_upload(filename: str, data: bytes) -> StoredUpload:
    """Keep ``data`` for a later apply under a new random token bound to this session."""
    folder = _upload_dir()
    _sweep(folder)
    token = secrets.token_urlsafe(24)
    path = folder / f"{token}.upload"
    # O_EXCL: never write through a file or link that is already there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    entries = [*_session_uploads(), [token, filename]]
    for old_token, _ in entries[:-KEPT_PER_SESSION]:
        _path_of(old_token).unlink(missing_ok=True)
    session[SESSION_KEY] = entries[-KEPT_PER_SESSION:]
    return StoredUpload(token, filename, path)


def find_upload(token: str) -> StoredUpload | None:
    """The upload this session kept under ``token``, unless unknown, expired or applied."""
    if not _TOKEN.fullmatch(token):
        return None
    names = dict((t, name) for t, name in _session_uploads())
    if token not in names:
        return None
    path = _path_of(token)
    try:
        fresh = path.stat().st_mtime >= time.time() - UPLOAD_TTL
    except FileNotFoundError:
        return None
    if not fresh:
        path.unlink(missing_ok=True)
        return None
    return StoredUpload(token, names[token], path)


def forget_upload(stored: StoredUpload) -> None:
    """Delete an upload and drop it from the session (after its apply)."""
    stored.path.unlink(missing_ok=True)
    session[SESSION_KEY] = [e for e in _session_uploads() if e[0] != stored.token]


def _options(*, dry_run: bool, prefix: str = "") -> ImportOptions:
    return ImportOptions(
        dry_run=dry_run,
        reassign_bad_macs=checkbox(f"{prefix}reassign_bad_macs"),
        scope=text_field(f"{prefix}scope") or None,
    )


def _form_of(options: ImportOptions) -> FormState:
    values = {"scope": options.scope or "", "reassign_bad_macs": "on"}
    if not options.reassign_bad_macs:
        values.pop("reassign_bad_macs")
    return FormState(values=values)


def _render(
    form: FormState,
    *,
    report: ImportReport | None = None,
    stored: StoredUpload | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    with unit_of_work() as db:
        page = render_template(
            "ovirt/import.html",
            form=form,
            report=report,
            stored=stored,
            scopes=list_scopes(db),
            limit=max_upload(),
            vm_rows=VM_ROWS,
        )
    return page, status


def _run(
    stored: StoredUpload, export: OvirtExport, options: ImportOptions, form: FormState
) -> ResponseReturnValue:
    """Import a kept upload (committed only when applied) and show the report or the error."""
    try:
        report = import_in_phases(
            unit_of_work, ui_actor(), export, options=options, sources=[stored.filename]
        )
    except ImportRefused as refused:
        return _render(form, report=refused.report, stored=stored, status=409)
    except MacPoolError as exc:
        form.errors.update(place_error(exc, FIELDS))
        return _render(form, stored=stored, status=status_of(exc))
    if report.applied:
        forget_upload(stored)
    return _render(form, report=report, stored=None if report.applied else stored)


@bp.before_request
def _allow_large_uploads() -> None:
    # Runs before the UI's guard reads the form: the app's general body limit is far too
    # small for exports, the plugin's own bound applies here.
    request.max_content_length = max_upload()


adopt_blueprint(bp)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
    return error_page(
        413,
        f"The upload is larger than the {max_upload():,} bytes an oVirt import accepts "
        f"({MAX_UPLOAD_KEY}). Nothing was written.",
    )


@bp.get("/ovirt")
@requires("operator")
def import_page() -> ResponseReturnValue:
    """The upload form."""
    return _render(FormState())


@bp.post("/ovirt")
@requires("operator")
def upload() -> ResponseReturnValue:
    """Upload an export and show the dry-run report; the bytes are kept for the apply."""
    options = _options(dry_run=True)
    form = _form_of(options)
    file = request.files.get("file")
    if file is None or not file.filename:
        form.errors["file"] = "Choose the export file to upload."
        return _render(form, status=422)
    try:
        data = file.read(max_upload() + 1)
    finally:
        file.close()
    filename = PurePosixPath(file.filename.replace("\\", "/")).name[:255] or "upload"
    if len(data) > max_upload():
        raise RequestEntityTooLarge()
    if runs_in_background(io.BytesIO(data), len(data)):
        return _start_job(store_upload(filename, data), options)
    try:
        export = read_upload(filename, data)
    except MacPoolError as exc:
        # Only a readable export is kept: a hostile or broken file leaves nothing behind.
        form.errors.update(place_error(exc, FIELDS))
        if FORM in form.errors:
            form.errors[FORM] += " Nothing was written."
        return _render(form, status=status_of(exc))
    return _run(store_upload(filename, data), export, options, form)


def _kept_upload(*, dry_run: bool) -> ResponseReturnValue:
    options = _options(dry_run=dry_run, prefix="review_")
    form = _form_of(options)
    stored = find_upload(text_field("upload"))
    if stored is None:
        form.errors[FORM] = (
            "That upload is no longer on the server (uploads are kept for an hour and until "
            "applied). Upload the file again."
        )
        return _render(form, status=410)
    # The importer runs again on the kept bytes: the apply never replays a dry-run report.
    with stored.path.open("rb") as handle:
        if runs_in_background(handle, os.fstat(handle.fileno()).st_size):
            return _start_job(stored, options)
        data = handle.read()
    export = read_upload(stored.filename, data)
    return _run(stored, export, options, form)


@bp.post("/ovirt/review")
@requires("operator")
def review() -> ResponseReturnValue:
    """Dry-run the kept upload again, e.g. with other options."""
    return _kept_upload(dry_run=True)


@bp.post("/ovirt/apply")
@requires("admin")
def apply() -> ResponseReturnValue:
    """Import the kept upload for real: the importer runs again, all or nothing."""
    return _kept_upload(dry_run=False)


def runs_in_background(handle: IO[bytes], size: int) -> bool:
    """Engine backups and large uploads are imported in the background, with a status page;
    small exports within the request."""
    return size > BACKGROUND_BYTES or is_backup(handle)


def _start_job(stored: StoredUpload, options: ImportOptions) -> ResponseReturnValue:
    job_id = start_background_import(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        ui_actor(),
        path=stored.path,
        upload=stored.token,
        filename=stored.filename,
        options=options,
    )
    return redirect(url_for("ovirt_ui.job", job_id=job_id), 303)


@bp.get("/ovirt/jobs/<job_id>")
@requires("operator")
def job(job_id: str) -> ResponseReturnValue:
    """A background import: its phase and progress while it runs (the page refreshes itself),
    then its report with the next step, like a dry run done within the request."""
    with unit_of_work() as db:
        try:
            found = get_job(db, ui_actor(), job_id)
        except MacPoolError as exc:
            return error_page(status_of(exc), exc.message)
        interrupted = is_interrupted(found)
        if found.state in ("queued", "running") and not interrupted:
            return render_template(
                "ovirt/job.html", job=found, refresh=REFRESH_SECONDS, phases=PHASES
            )
        options = ImportOptions(**found.options)
        error, status, result, upload = found.error, found.error_status, found.result, found.upload
    form = _form_of(options)
    if interrupted or error is not None or result is None:
        form.errors[FORM] = INTERRUPTED if interrupted else (error or INTERRUPTED)
        return _render(form, status=status or 500)
    report = ImportReport.from_dict(result)
    stored = None if report.applied else find_upload(upload)
    return _render(form, report=report, stored=stored)


def init_app(app: Flask) -> None:
    """Add the import page and its menu entry to the app's admin UI (if the UI is there)."""
    if "ui" not in app.blueprints:
        return
    app.register_blueprint(bp)
    add_nav_entry(app, NAV_LABEL, "ovirt_ui.import_page")


__all__ = [
    "StoredUpload",
    "bp",
    "find_upload",
    "forget_upload",
    "init_app",
    "store_upload",
]
