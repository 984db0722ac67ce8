"""Background import jobs: their state lives in the database, so the status page of a job shows
the same phase and progress whichever worker or replica serves it.

A job is started by the request that accepted the work, then advanced by the thread doing it
(:func:`record_progress`, :func:`finish_job`), each call a short unit of work of its own. The
``updated_at`` column is the job's heartbeat: a job still marked running whose heartbeat is
older than :data:`STALE_AFTER` was interrupted (its worker stopped) and is shown as failed.
Jobs are visible to the user who started them only, and are deleted a day after they started.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import NotFound
from manager.db import ImportJob, utcnow

#: A running job whose heartbeat is older than this was interrupted.
STALE_AFTER = timedelta(minutes=15)
#: Jobs (and their reports) are deleted this long after they started.
KEEP_FOR = timedelta(days=1)
_ACTIVE = ("queued", "running")


def start_job(
    session: Session,
    actor: Actor,
    *,
    kind: str,
    filename: str = "",
    upload: str = "",
    options: dict[str, Any] | None = None,
) -> ImportJob:
    """Record a new queued job owned by ``actor`` (expired jobs are deleted on the way)."""
    now = utcnow()
    session.execute(delete(ImportJob).where(ImportJob.created_at < now - KEEP_FOR))
    job = ImportJob(
        id=secrets.token_urlsafe(24),
        kind=kind,
        owner=actor.name[:255],
        filename=filename[:255],
        upload=upload,
        options=options or {},
        state="queued",
        phase="queued",
        done=0,
        total=0,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, actor: Actor, job_id: str) -> ImportJob:
    """The job, if ``actor`` started it; anyone else gets the same :class:`NotFound`."""
    job = session.get(ImportJob, job_id) if job_id else None
    if job is None or job.owner != actor.name[:255]:
        raise NotFound(f"No import job '{job_id[:64]}' (jobs are kept for a day).")
    return job


def is_interrupted(job: ImportJob, *, now: datetime | None = None) -> bool:
    """True when the job is still marked queued or running but its heartbeat stopped."""
    return job.state in _ACTIVE and job.updated_at < (now or utcnow()) - STALE_AFTER


def _job(session: Session, job_id: str) -> ImportJob:
    job = session.scalars(select(ImportJob).where(ImportJob.id == job_id)).one_or_none()
    if job is None:
        raise NotFound(f"No import job '{job_id[:64]}'.")
    return job


def record_progress(session: Session, job_id: str, *, phase: str, done: int, total: int) -> None:
    """Mark the job running in ``phase`` with ``done`` of ``total`` units (its heartbeat)."""
    job = _job(session, job_id)
    job.state, job.phase, job.done, job.total = "running", phase, done, total
    job.updated_at = utcnow()


def finish_job(
    session: Session,
    job_id: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    error_status: int | None = None,
) -> None:
    """End the job: done with its ``result``, or failed with ``error`` (and an HTTP-like
    status the UI shows, e.g. 422 for an unreadable export)."""
    job = _job(session, job_id)
    job.state = "failed" if error is not None else "done"
    job.phase = job.state
    job.result, job.error, job.error_status = result, error, error_status
    job.updated_at = utcnow()


__all__ = [
    "KEEP_FOR",
    "STALE_AFTER",
    "finish_job",
    "get_job",
    "is_interrupted",
    "record_progress",
    "start_job",
]
