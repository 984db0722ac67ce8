"""End-to-end flows in headless Chromium against a real server (werkzeug, threaded).

Skipped when /usr/bin/chromium is missing, unless MACPOOL_REQUIRE_BROWSER is set.
Screenshots of every page land in test-artifacts/ui/ (gitignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from manager.core.actor import Actor
from manager.db import Base, Database, Pool
from manager.services import create_pool
from manager.services.auth import hash_password
from tests.ui.conftest import PASSWORD, app_session, hold_duplicate, make_app, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--metrics-recording-only", "--mute-audio",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    if os.environ.get("MACPOOL_REQUIRE_BROWSER"):
        pytest.fail(
            "MACPOOL_REQUIRE_BROWSER is set but /usr/bin/chromium is missing", pytrace=False
        )
    pytest.skip("/usr/bin/chromium is not installed", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    """The app on a fresh SQLite database, served on a free loopback port."""
    tmp = tmp_path_factory.mktemp("browser")
    database = Database(f"sqlite:///{tmp / 'macpool.db'}")
    Base.metadata.create_all(database.engine)
    app = make_app(database, tmp, hash_password(PASSWORD))
    with serving(app, database) as url:
        yield url, app


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_login_dashboard_logout(server: tuple[str, Flask], page: Page) -> None:
    base, _ = server
    page.goto(f"{base}/pools")
    expect(page).to_have_url(re.compile(r"/login\?next=/pools"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Unknown username or wrong password.")
    shot(page, "login-failed")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Pools")).to_be_visible()
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("meter", name="Utilization of Default")).to_be_visible()
    shot(page, "dashboard")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login"))


def test_pool_create_overlap_and_edit(server: tuple[str, Flask], page: Page) -> None:
    base, app = server
    login(page, base, "admin")
    page.get_by_role("link", name="Pools", exact=True).click()
    page.get_by_role("link", name="New pool").click()
    page.get_by_label("Name").fill("lab-east")
    page.get_by_label("Description").fill("Lab VMs in the east")
    page.get_by_label("Start").nth(0).fill("0a:00:00:00:00:00")
    page.get_by_label("End").nth(0).fill("0a:00:00:00:00:ff")
    page.get_by_role("button", name="Add a range row").click()
    page.get_by_label("Start").nth(1).fill("02:00:00:00:10:00")
    page.get_by_label("End").nth(1).fill("02:00:00:00:10:ff")
    page.get_by_role("button", name="Create pool").click()
    # Refused: the message sits in the ranges fieldset, names the other pool, input is kept.
    ranges = page.get_by_role("group", name=re.compile("Ranges"))
    expect(ranges.locator("#ranges-error")).to_contain_text("overlaps pool 'Default' range")
    expect(ranges.locator(".range-row.has-error")).to_have_count(1)
    expect(page.get_by_label("Name")).to_have_value("lab-east")
    expect(page.get_by_label("Start").nth(1)).to_have_value("02:00:00:00:10:00")
    shot(page, "pool-overlap-refused")
    page.get_by_label("Start").nth(1).fill("0a:00:00:00:10:00")
    page.get_by_label("End").nth(1).fill("0a:00:00:00:1f:ff")
    page.get_by_role("button", name="Create pool").click()
    expect(page.get_by_text("Pool 'lab-east' created.")).to_be_visible()
    expect(page.locator("table").first.locator("tbody tr")).to_have_count(2)
    shot(page, "pool-detail")
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Description").fill("Lab VMs, east wing")
    page.get_by_role("button", name="Remove range row 2").click()
    shot(page, "pool-edit")
    page.get_by_role("button", name="Save pool").click()
    expect(page.get_by_text("Lab VMs, east wing")).to_be_visible()
    expect(page.locator("table").first.locator("tbody tr")).to_have_count(1)
    page.get_by_role("link", name="Pools", exact=True).click()
    shot(page, "pools")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/pools/new")
    shot(page, "pool-form-narrow")
    with app_session(app, write=False) as s:
        assert s.scalars(select(Pool).where(Pool.name == "lab-east")).one().description == (
            "Lab VMs, east wing"
        )


def test_scope_tree(server: tuple[str, Flask], page: Page) -> None:
    base, app = server
    with app_session(app) as s:
        create_pool(s, Actor("t"), name="west", ranges=["0c:00:00:00:00:00-0c:00:00:00:ff:ff"])
    login(page, base, "admin")
    page.get_by_role("link", name="Scopes").click()
    form = page.locator("form", has=page.get_by_role("button", name="Create scope"))
    form.get_by_label("Kind").select_option("datacenter")
    form.get_by_label("Name").fill("dc-west")
    form.get_by_label("Pool").select_option(label="west")
    form.get_by_role("button", name="Create scope").click()
    expect(page.get_by_text("Scope /dc-west created.")).to_be_visible()
    for name in ("c1", "c2"):
        form.get_by_label("Kind").select_option("cluster")
        form.get_by_label("Name").fill(name)
        form.get_by_label("Parent").select_option("/dc-west")
        form.get_by_role("button", name="Create scope").click()
    row = page.locator("tr", has=page.get_by_role("link", name="c1", exact=True))
    expect(row).to_contain_text("west inherited from /dc-west")
    shot(page, "scopes")
    # Assign the default pool to c1, then clear it so it inherits again.
    row.get_by_role("link", name="c1").click()
    page.get_by_label("Pool of this scope").select_option(label="Default")
    page.get_by_role("button", name="Save assignment").click()
    expect(page.get_by_text("now uses its own pool")).to_be_visible()
    expect(page.locator(".effective")).to_contain_text("Default assigned")
    shot(page, "scope-detail")
    page.get_by_label("Pool of this scope").select_option(value="")
    page.get_by_role("button", name="Save assignment").click()
    expect(page.locator(".effective")).to_contain_text("west inherited from /dc-west")
    # Move c1 to the engine, then delete it.
    page.get_by_label("New parent").select_option("/")
    page.get_by_role("button", name="Move scope").click()
    expect(page.get_by_text("Scope moved to /c1.")).to_be_visible()
    page.get_by_role("link", name="Delete").click()
    shot(page, "scope-delete-confirm")
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Scope /c1 deleted.")).to_be_visible()
    # A non-empty scope is refused with the reason.
    page.get_by_role("link", name="dc-west").click()
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text("has 1 child scope")


def test_reserve_release_and_mac_page(server: tuple[str, Flask], page: Page) -> None:
    base, _ = server
    login(page, base, "operator")
    page.get_by_role("link", name="Allocations").click()
    page.get_by_role("link", name="Reserve a MAC").click()
    page.get_by_label("Device name").fill("core-router")
    page.get_by_label("Interface").fill("uplink")
    page.get_by_label("MAC").fill("0200.0000.abcd")
    shot(page, "reserve")
    page.get_by_role("button", name="Reserve").click()
    expect(page.get_by_role("heading", name="MAC 02:00:00:00:ab:cd")).to_be_visible()
    expect(page.get_by_text("Reserved 02:00:00:00:ab:cd for device 'core-router'.")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Default")
    shot(page, "mac")
    page.get_by_role("link", name="Allocations").click()
    page.get_by_label("MAC or owner name").fill("02-00-00-00-AB-CD")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("cell", name="device core-router")).to_be_visible()
    shot(page, "allocations")
    page.get_by_role("link", name="Release").click()
    shot(page, "release-confirm")
    page.get_by_role("button", name="Release").click()
    expect(page.get_by_text("Nobody holds this MAC: it is free.")).to_be_visible()


def test_duplicates_and_audit(server: tuple[str, Flask], page: Page) -> None:
    base, app = server
    hold_duplicate(app, first_octet="0e", owners=("vm-one", "vm-two"))
    login(page, base, "viewer")
    page.get_by_role("link", name="Duplicates").click()
    expect(page.get_by_role("heading", name=re.compile("0e:00:00:00:00:05"))).to_be_visible()
    expect(page.get_by_text("2 holders")).to_be_visible()
    shot(page, "duplicates")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Actor").fill("t")
    page.get_by_label("Action").fill("allocation.")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"actor=t"))
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("allocation.create")
    shot(page, "audit")
    page.get_by_label("Severity").select_option("warning")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No event matches.")).to_be_visible()


def test_viewer_sees_no_edit_controls_and_forged_post_is_refused(
    server: tuple[str, Flask], page: Page
) -> None:
    base, app = server
    login(page, base, "viewer")
    for path in ("/pools", "/pools/1", "/scopes", "/scopes/1", "/allocations"):
        page.goto(base + path)
        expect(page.locator("main form[method=post]")).to_have_count(0)
        expect(
            page.get_by_role(
                "link", name=re.compile("^(New pool|Edit|Delete|Reserve a MAC|Release)$")
            )
        ).to_have_count(0)
    shot(page, "viewer-scopes")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{base}/pools/new",
        form={
            "csrf_token": token or "",
            "name": "forged",
            "range_start": "0f:00:00:00:00:00",
            "range_end": "0f:00:00:00:00:ff",
        },
    )
    assert answer.status == 403
    page.goto(f"{base}/pools/new")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(page, "forbidden")
    with app_session(app, write=False) as s:
        assert s.scalars(select(Pool).where(Pool.name == "forged")).first() is None


def test_error_page_style(server: tuple[str, Flask], page: Page) -> None:
    base, _ = server
    login(page, base, "viewer")
    page.goto(f"{base}/pools/4242")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("Pool 4242 does not exist.")
    page.goto(f"{base}/no-such-page")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shot(page, "not-found")


def test_migration_hand_over_history_check_and_completion(
    server: tuple[str, Flask], page: Page
) -> None:
    """An imported oVirt VM's MAC taken over by its KubeVirt copy: the check, the MAC's
    history (imported → handed over → final) and completing the hand-over."""
    from manager.core.actor import Owner
    from manager.services import Handover, allocate_mac, create_scope

    base, app = server
    mac = "02:00:00:00:88:01"
    with app_session(app) as s:
        create_scope(s, Actor("t"), kind="datacenter", name="dc-mig")
        cluster = create_scope(s, Actor("t"), kind="cluster", name="ocp-mig")
        create_scope(s, Actor("t"), kind="namespace", name="apps", parent=cluster.id)
        allocate_mac(
            s,
            Actor("ovirt-import"),
            scope="/dc-mig",
            owner=Owner("ovirt-vm", "erp", "vm-erp"),
            interface="nic1",
            mac=mac,
        )
    login(page, base, "operator")
    page.get_by_role("link", name="Migrations").click()
    page.get_by_label("Target scope").fill("/ocp-mig/apps")
    plan = '{"vms": [{"id": "vm-erp", "name": "erp", "nics": [{"name": "nic1", "mac": "%s"}]}]}'
    page.get_by_label("Source VMs (JSON)").fill(plan % mac)
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", name="The plan passes")).to_be_visible()
    expect(page.get_by_role("cell", name="hand-over")).to_be_visible()
    shot(page, "migration-check")
    with app_session(app) as s:
        allocate_mac(
            s,
            Actor("kubernetes-webhook"),
            scope="/ocp-mig/apps",
            owner=Owner("vm", "erp"),
            interface="default",
            mac=mac,
            handover=Handover("vm-erp", plan="plan-erp"),
        )
    page.goto(f"{base}/macs/{mac}")
    expect(page.get_by_role("heading", name="Migration hand-over pending")).to_be_visible()
    expect(page.locator("ol.history")).to_contain_text("Handed over from ovirt-vm 'erp'")
    shot(page, "mac-handover")
    page.get_by_role("button", name="Complete the hand-over").click()
    expect(page.get_by_text("is final: its source VM no longer owns it")).to_be_visible()
    expect(page.locator("ol.history")).to_contain_text("Hand-over final (completed)")
