"""Background imports in the admin UI: an engine backup upload answers with a status page that
refreshes itself, the job runs in a thread, its state is in the database (any worker shows it),
then the report and the apply, which runs in the background too."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from manager.core.actor import Actor
from manager.db import Allocation, Database, ImportJob
from manager.services import finish_job, get_job, record_progress, start_job
from manager.web import state
from plugins.ovirt import background as background_module
from plugins.ovirt import importer as importer_module
from plugins.ovirt.generate_backup import write_engine_backup
from tests.ui.conftest import csrf_token, login_as

from .conftest import tar_bytes
from .factories import counts
from .test_import_ui import PAGE, _app, _kept_files, _next, _text, _token, _upload

JOB_URL = re.compile(r"/import/ovirt/jobs/([A-Za-z0-9_-]+)$")
REFRESH = '<meta http-equiv="refresh"'


@pytest.fixture
def app(database: Database, tmp_path: Path) -> Flask:
    return _app(database, tmp_path, "ovirt")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def backup(tmp_path: Path) -> bytes:
    path = write_engine_backup(tmp_path / "engine.tar.xz", vms=30, nics_per_vm=2, filler_rows=100)
    return path.read_bytes()


def _counts(app: Flask) -> dict[str, int]:
    with state(app).database.session() as s:
        return counts(s)


def _job_id(response: TestResponse) -> str:
    assert response.status_code == 303, _text(response)
    found = JOB_URL.search(response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


def _wait(client: FlaskClient, job_id: str) -> TestResponse:
    """The job's page once it no longer refreshes itself (bounded wait, never a timing test)."""
    deadline = time.monotonic() + 60
    while True:
        page = client.get(f"{PAGE}/jobs/{job_id}")
        if REFRESH not in _text(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def test_backup_upload_runs_in_the_background_then_applies(
    client: FlaskClient, app: Flask, backup: bytes
) -> None:
    login_as(client, "admin")
    before = _counts(app)
    job_id = _job_id(_upload(client, backup, "engine.tar.xz"))
    done = _wait(client, job_id)
    text = _text(done)
    assert done.status_code == 200, text
    assert "Dry run: nothing was written." in text
    assert "<dt>VMs</dt><dd>30</dd>" in text and "<dt>Kept</dt><dd>60</dd>" in text
    assert "Skipped" not in text or "Snapshots are not VMs" in text
    assert _counts(app) == before
    # The report's review form applies the kept upload, again in the background.
    applied = _wait(client, _job_id(_next(client, "apply", _token(done))))
    assert "Applied: 30 VM(s) and 60 NIC(s) imported" in _text(applied)
    assert _counts(app)["allocations"] == before["allocations"] + 60
    with state(app).database.session() as s:
        assert {j.state for j in s.query(ImportJob)} == {"done"}


def test_a_large_apply_in_the_background_is_written_in_chunks_with_progress(
    client: FlaskClient, app: Flask, backup: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 VMs in chunks of 10: the job records a "writing" phase per chunk, all is applied."""
    monkeypatch.setattr(importer_module, "CHUNK_VMS", 10)
    monkeypatch.setattr(background_module, "PROGRESS_INTERVAL", 0)
    phases: list[tuple[str, int, int]] = []
    real = background_module.record_progress

    def spy(session: Any, job_id: str, *, phase: str, done: int, total: int) -> None:
        phases.append((phase, done, total))
        real(session, job_id, phase=phase, done=done, total=total)

    monkeypatch.setattr(background_module, "record_progress", spy)
    login_as(client, "admin")
    before = _counts(app)
    done = _wait(client, _job_id(_upload(client, backup, "engine.tar.xz")))
    applied = _wait(client, _job_id(_next(client, "apply", _token(done))))
    assert "Applied: 30 VM(s) and 60 NIC(s) imported" in _text(applied)
    assert [p for p in phases if p[0] == "writing"] == [
        ("writing", 20, 60),
        ("writing", 40, 60),
        ("writing", 60, 60),
    ]
    assert _counts(app)["allocations"] == before["allocations"] + 60
    with state(app).database.session() as s:
        assert s.scalar(select(func.count()).where(Allocation.state == "pending")) == 0


def test_the_status_page_refreshes_and_shows_progress(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    with state(app).database.session(write=True) as s:
        job = start_job(
            s,
            Actor("operator"),
            kind="ovirt",
            filename="big.tar.gz",
            options={"dry_run": True, "reassign_bad_macs": False, "scope": None},
        )
        job_id = job.id
    queued = client.get(f"{PAGE}/jobs/{job_id}")
    assert queued.status_code == 200 and REFRESH in _text(queued) and "Queued" in _text(queued)
    with state(app).database.session(write=True) as s:
        record_progress(s, job_id, phase="reading", done=512 * 1024, total=2048 * 1024)
    page = _text(client.get(f"{PAGE}/jobs/{job_id}"))
    assert REFRESH in page and "Reading the upload" in page and "25% (0.5 of 2.0 MiB)" in page
    assert 'role="progressbar"' in page and 'aria-valuenow="524288"' in page
    assert "big.tar.gz" in page and "Dry run: nothing will be written." in page
    with state(app).database.session(write=True) as s:
        record_progress(s, job_id, phase="importing", done=0, total=20000)
    assert "20,000 NIC(s)" in _text(client.get(f"{PAGE}/jobs/{job_id}"))
    with state(app).database.session(write=True) as s:
        record_progress(s, job_id, phase="writing", done=5000, total=20000)
    page = _text(client.get(f"{PAGE}/jobs/{job_id}"))
    assert "Writing the allocations" in page and "25%" in page


def test_any_worker_shows_the_job(
    client: FlaskClient, app: Flask, database: Database, tmp_path: Path, backup: bytes
) -> None:
    login_as(client, "operator")
    job_id = _job_id(_upload(client, backup, "engine.tar.xz"))
    _wait(client, job_id)
    # Another app on the same database (another worker or replica), another session.
    other = _app_again(database, tmp_path / "other")
    with other.test_client() as second:
        login_as(second, "operator")
        page = second.get(f"{PAGE}/jobs/{job_id}")
        assert page.status_code == 200 and "<dt>VMs</dt><dd>30</dd>" in _text(page)


def _app_again(database: Database, data_dir: Path) -> Flask:
    from manager.app import create_app

    data_dir.mkdir()
    return create_app(
        {
            "database_url": str(database.url),
            "data_dir": str(data_dir),
            "secret_key": "t" * 32,
            "plugins": "ovirt",
        },
        database=database,
    )


def test_jobs_are_private_and_need_a_login(client: FlaskClient, app: Flask) -> None:
    with state(app).database.session(write=True) as s:
        job_id = start_job(s, Actor("admin"), kind="ovirt").id
    anonymous = client.get(f"{PAGE}/jobs/{job_id}")
    assert anonymous.status_code in (302, 303) and "login" in anonymous.headers["Location"]
    login_as(client, "viewer")
    assert client.get(f"{PAGE}/jobs/{job_id}").status_code == 403
    login_as(client, "operator")
    assert client.get(f"{PAGE}/jobs/{job_id}").status_code == 404
    assert client.get(f"{PAGE}/jobs/nonsense").status_code == 404


def test_a_broken_backup_fails_the_job_with_its_error(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    before = _counts(app)
    broken = tar_bytes({"./version": b"4.5\n", "./db/engine_backup.db": b"garbage"}, mode="w:gz")
    page = _wait(client, _job_id(_upload(client, broken, "engine.tar.gz")))
    assert page.status_code == 422
    assert "engine.tar.gz!db/engine_backup.db: not a PostgreSQL dump" in _text(page)
    assert _counts(app) == before
    # A broken upload leaves nothing behind.
    assert _kept_files(app) == []


def test_an_interrupted_job_says_so(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    with state(app).database.session(write=True) as s:
        job = start_job(s, Actor("operator"), kind="ovirt", options={"dry_run": True})
        job.updated_at -= timedelta(hours=1)
        job_id = job.id
    page = client.get(f"{PAGE}/jobs/{job_id}")
    assert page.status_code == 500 and "The import was interrupted" in _text(page)
    assert REFRESH not in _text(page)


def test_job_service_finishes_and_hides_jobs(database: Database) -> None:
    with database.session(write=True) as s:
        job_id = start_job(s, Actor("ann"), kind="ovirt").id
    with database.session(write=True) as s:
        finish_job(s, job_id, error="boom", error_status=422)
    with database.session() as s:
        job = get_job(s, Actor("ann"), job_id)
        assert (job.state, job.error, job.error_status) == ("failed", "boom", 422)
        with pytest.raises(Exception, match="No import job"):
            get_job(s, Actor("bob"), job_id)


def test_upload_needs_csrf(client: FlaskClient, app: Flask, backup: bytes) -> None:
    login_as(client, "admin")
    refused = _upload(client, backup, "engine.tar.xz", csrf=False)
    assert refused.status_code == 400
    with state(app).database.session() as s:
        assert s.query(ImportJob).count() == 0
    assert csrf_token(client, PAGE)
