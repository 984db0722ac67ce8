"""Imports that run in the background, for uploads too large to import within one request
(engine backups, large archives): the UI answers at once with a status page, a thread of the
worker that received the upload reads and imports it, and the job's phase, progress and final
report are kept in the database (:mod:`manager.services.jobs`), so the status page shows the
same thing whichever worker or replica serves it.

The thread runs the very import a request would (:func:`~plugins.ovirt.importer.import_in_phases`,
dry run or apply, on the kept upload); only where its outcome goes differs. Progress is written
while the upload is read, at most once a second; while the import itself runs, the job says
"importing" without a percentage: an import whose plan keeps going stale is planned inside the
write lock, where a second write (the progress) would wait for it. A large import written in
chunks says "writing" with the NICs written so far (recorded between the chunks' transactions).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

from flask import Flask

from manager.core.actor import Actor
from manager.core.errors import MacPoolError
from manager.services import finish_job, record_progress, start_job, status_of
from manager.web import unit_of_work
from plugins.ovirt.importer import ImportOptions, ImportRefused, import_in_phases
from plugins.ovirt.reader import read_upload_file
from plugins.ovirt.report import ImportReport

log = logging.getLogger(__name__)

KIND = "ovirt"
#: Seconds between two progress writes of one job.
PROGRESS_INTERVAL = 1.0
READING = "reading"
IMPORTING = "importing"
WRITING = "writing"


class _Progress:
    """A ``progress(done, total)`` callback that records the job's progress, throttled."""

    def __init__(self, job_id: str, phase: str) -> None:
        self.job_id = job_id
        self.phase = phase
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL and done < total:
            return
        self.last = now
        _record(self.job_id, phase=self.phase, done=done, total=total)


def _record(job_id: str, *, phase: str, done: int, total: int) -> None:
    with unit_of_work(write=True) as session:
        record_progress(session, job_id, phase=phase, done=done, total=total)


def _finish(job_id: str, **outcome: object) -> None:
    with unit_of_work(write=True) as session:
        finish_job(session, job_id, **outcome)  # type: ignore[arg-type]


def _import(
    job_id: str, actor: Actor, *, path: Path, filename: str, options: ImportOptions
) -> ImportReport:
    export = read_upload_file(filename, path, progress=_Progress(job_id, READING))
    _record(job_id, phase=IMPORTING, done=0, total=export.nic_count)
    try:
        report = import_in_phases(
            unit_of_work,
            actor,
            export,
            options=options,
            sources=[filename],
            writing=_Progress(job_id, WRITING),
        )
    except ImportRefused as refused:
        return refused.report
    if report.applied:
        path.unlink(missing_ok=True)  # an applied upload is not kept
    return report


def _run(
    app: Flask, job_id: str, actor: Actor, *, path: Path, filename: str, options: ImportOptions
) -> None:
    with app.app_context():
        try:
            report = _import(job_id, actor, path=path, filename=filename, options=options)
        except MacPoolError as exc:
            path.unlink(missing_ok=True)  # an unreadable or refused upload is not kept
            _finish(job_id, error=exc.message, error_status=status_of(exc))
        except Exception:
            log.exception("oVirt import job %s failed", job_id)
            path.unlink(missing_ok=True)
            _finish(
                job_id,
                error="The import failed because of an internal error; nothing was written. "
                "The server log has details.",
                error_status=500,
            )
        else:
            _finish(job_id, result=report.to_dict())


def start_background_import(
    app: Flask, actor: Actor, *, path: Path, upload: str, filename: str, options: ImportOptions
) -> str:
    """Record a job for importing the kept upload ``path`` and start it; returns the job id."""
    with unit_of_work(write=True) as session:
        job = start_job(
            session, actor, kind=KIND, filename=filename, upload=upload, options=asdict(options)
        )
        job_id = job.id
    thread = threading.Thread(
        target=_run,
        args=(app, job_id, actor),
        kwargs={"path": path, "filename": filename, "options": options},
        name=f"ovirt-import-{job_id[:8]}",
        daemon=True,
    )
    thread.start()
    return job_id


__all__ = ["IMPORTING", "KIND", "READING", "WRITING", "start_background_import"]
