"""The Import page in headless Chromium: upload a generated export domain, read the refused
dry run, tick "Reassign bad MACs", apply, see the result.

Skipped when /usr/bin/chromium is missing, unless MACPOOL_REQUIRE_BROWSER is set. Screenshots
land in test-artifacts/ui/ (import-dry-run.png, import-reassign.png, import-applied.png).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from manager.app import create_app
from manager.core.actor import Actor, Owner
from manager.core.mac import format_mac_int
from manager.db import Allocation, Base, Database, User
from manager.services import allocate_mac, bootstrap
from manager.services.auth import hash_password
from manager.web import state
from plugins.ovirt.generate import DEFAULT_MAC_START, generated_id, vm_ovf, write_export_domain

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

#: The default pool holds the generated MACs ...:00-...:0f; the export uses ...:00-...:05.
POOL_RANGE = f"{format_mac_int(DEFAULT_MAC_START)}-{format_mac_int(DEFAULT_MAC_START + 0x0F)}"
#: A device already holds the export's third MAC: that NIC is in conflict (in use).
HELD = format_mac_int(DEFAULT_MAC_START + 2)
#: A VM whose NIC is outside every pool: in conflict too.
OUTSIDE = "00:11:22:33:44:55"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    """An app with the oVirt plugin on a fresh SQLite database, on a free loopback port."""
    database = Database(f"sqlite:///{tmp_path / 'macpool.db'}")
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as s:
        bootstrap(s, default_range=POOL_RANGE)
        s.add(User(username="admin", role="admin", password_hash=hash_password(PASSWORD)))
        allocate_mac(
            s, Actor("t"), scope="/", owner=Owner("device", "router-1"), interface="eth0", mac=HELD
        )
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


def _export(tmp_path: Path) -> Path:
    """A tar of an export domain: three generated VMs, plus one VM with an outside MAC."""
    domain = write_export_domain(tmp_path / "export", vms=3, nics_per_vm=2)
    vm_id = generated_id("vm", 99)
    folder = domain / "master" / "vms" / vm_id
    folder.mkdir()
    text = vm_ovf(vm_id=vm_id, name="legacy-db", macs=[int(OUTSIDE.replace(":", ""), 16)])
    (folder / f"{vm_id}.ovf").write_text(text, encoding="utf-8")
    archive = tmp_path / "export-domain.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(domain, arcname=domain.name)
    return archive


def test_upload_dry_run_reassign_apply(
    server: tuple[str, Flask],
    page: Page,  # noqa: F811 (the UI tests' fixture)
    tmp_path: Path,
) -> None:
    base, app = server
    login(page, base, "admin")
    page.get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", name="Import from oVirt")).to_be_visible()
    upload = page.locator("form", has=page.get_by_role("button", name="Dry run", exact=True))
    upload.get_by_label("Export file").set_input_files(str(_export(tmp_path)))
    upload.get_by_label("Target scope").select_option("/")
    upload.get_by_role("button", name="Dry run", exact=True).click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Applying would be refused: 2 NIC(s) have bad MACs")
    expect(alert).to_contain_text("Nothing would be written.")
    expect(alert.locator("tbody tr")).to_have_count(2)
    expect(alert).to_contain_text(OUTSIDE)
    expect(alert).to_contain_text("router-1")
    expect(page.get_by_role("link", name="Import")).to_have_attribute("aria-current", "page")
    shot(page, "import-dry-run")

    review = page.locator("form", has=page.get_by_role("button", name="Apply"))
    expect(review.get_by_label("Target scope")).to_have_value("/")
    review.get_by_label("Reassign bad MACs").check()
    review.get_by_role("button", name="Dry run again").click()
    expect(page.get_by_text("Dry run: nothing was written.")).to_be_visible()
    expect(page.locator(".import-vms .nic-reassigned")).to_have_count(2)
    shot(page, "import-reassign")
    with app.app_context(), state(app).database.session() as s:
        assert len(s.scalars(select(Allocation)).all()) == 1

    review = page.locator("form", has=page.get_by_role("button", name="Apply"))
    expect(review.get_by_label("Reassign bad MACs")).to_be_checked()
    review.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("Applied: 4 VM(s) and 7 NIC(s) imported")).to_be_visible()
    expect(page.get_by_role("button", name="Apply")).to_have_count(0)
    expect(page.locator(".import-vms .nic-kept")).to_have_count(5)
    shot(page, "import-applied")
    with app.app_context(), state(app).database.session() as s:
        owners = {a.owner_name for a in s.scalars(select(Allocation))}
    assert owners >= {"router-1", "vm-0", "vm-1", "vm-2", "legacy-db"}
