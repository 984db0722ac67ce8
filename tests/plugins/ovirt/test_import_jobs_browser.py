"""A background import in headless Chromium: upload an engine backup on the Import page, land on
the job's status page, which reloads itself (meta refresh, no script needed) into the report;
apply, which runs in the background too, and see the result.

Skipped when /usr/bin/chromium is missing, unless MACPOOL_REQUIRE_BROWSER is set. Screenshots:
test-artifacts/ui/import-job-report.png and import-job-applied.png.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from manager.app import create_app
from manager.core.actor import Actor
from manager.db import Allocation, Base, Database, User
from manager.services import bootstrap, finish_job, record_progress, start_job
from manager.services.auth import hash_password
from manager.web import state
from plugins.ovirt.generate_backup import write_engine_backup

from .conftest import IMPORT_DEFAULT_RANGE

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    if os.environ.get("MACPOOL_REQUIRE_BROWSER"):
        pytest.fail(
            "MACPOOL_REQUIRE_BROWSER is set but /usr/bin/chromium is missing", pytrace=False
        )
    pytest.skip("/usr/bin/chromium is not installed", allow_module_level=True)

from playwright.sync_api import Page, expect  # noqa: E402

from tests.ui.conftest import PASSWORD, serving  # noqa: E402
from tests.ui.test_browser import browser, login, page, shot  # noqa: E402, F401

VMS = 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    database = Database(f"sqlite:///{tmp_path / 'macpool.db'}")
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as s:
        bootstrap(s, default_range=IMPORT_DEFAULT_RANGE)
        s.add(User(username="admin", role="admin", password_hash=hash_password(PASSWORD)))
    app = create_app(
        {
            "database_url": str(database.url),
            "data_dir": str(tmp_path),
            "secret_key": "t" * 32,
            "plugins": "ovirt",
        },
        database=database,
    )
    app.config["MACPOOL_UI_LOGIN_DELAY"] = 0
    with serving(app, database) as url:
        yield url, app


def test_backup_upload_status_page_report_apply(
    server: tuple[str, Flask],
    page: Page,  # noqa: F811 (the UI tests' fixture)
    tmp_path: Path,
) -> None:
    base, app = server
    backup = write_engine_backup(tmp_path / "engine.tar.xz", vms=VMS, nics_per_vm=2)
    login(page, base, "admin")
    page.goto(f"{base}/import/ovirt")
    upload = page.locator("form", has=page.get_by_role("button", name="Dry run", exact=True))
    upload.get_by_label("Export file").set_input_files(str(backup))
    upload.get_by_role("button", name="Dry run", exact=True).click()

    # The upload answers with the job's page; it reloads itself until the report is there.
    expect(page).to_have_url(re.compile(r"/import/ovirt/jobs/[A-Za-z0-9_-]+$"))
    expect(page.get_by_text("Dry run: nothing was written.")).to_be_visible(timeout=60_000)
    expect(page.locator(".stats")).to_contain_text(f"{2 * VMS:,}")
    shot(page, "import-job-report")

    review = page.locator("form", has=page.get_by_role("button", name="Apply"))
    review.get_by_role("button", name="Apply").click()
    expect(page.get_by_text(f"Applied: {VMS} VM(s) and {2 * VMS} NIC(s) imported")).to_be_visible(
        timeout=60_000
    )
    shot(page, "import-job-applied")
    with app.app_context(), state(app).database.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 2 * VMS


def test_a_running_job_page_reloads_itself_until_the_job_ends(
    server: tuple[str, Flask],
    page: Page,  # noqa: F811 (the UI tests' fixture)
) -> None:
    base, app = server
    login(page, base, "admin")
    with app.app_context(), state(app).database.session(write=True) as s:
        job_id = start_job(
            s, Actor("admin"), kind="ovirt", filename="engine.tar.gz", options={"dry_run": True}
        ).id
        record_progress(s, job_id, phase="reading", done=40 * 2**20, total=100 * 2**20)
    page.goto(f"{base}/import/ovirt/jobs/{job_id}")
    expect(page.get_by_role("status")).to_contain_text(
        "Reading the upload — 40% (40.0 of 100.0 MiB)"
    )
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", str(40 * 2**20))
    shot(page, "import-job-running")
    with app.app_context(), state(app).database.session(write=True) as s:
        finish_job(s, job_id, error="engine.tar.gz: the backup is truncated.", error_status=422)
    # No click, no script: the meta refresh brings the outcome.
    expect(page.get_by_text("engine.tar.gz: the backup is truncated.")).to_be_visible(
        timeout=15_000
    )
