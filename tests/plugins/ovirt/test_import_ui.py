"""The admin UI's Import page (plugins/ovirt/ui.py): roles, CSRF, dry run, apply, refused
imports, hostile uploads, the kept upload between dry run and apply, and its absence when the
oVirt plugin is disabled."""

from __future__ import annotations

import html
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import TestResponse, encode_multipart

from manager.app import create_app
from manager.db import AuditEvent, Database, User
from manager.services import bootstrap
from manager.web import state
from plugins.ovirt.generate import vm_ovf
from plugins.ovirt.ui import UPLOAD_DIR
from plugins.ovirt.web import MAX_UPLOAD_KEY
from tests.ui.conftest import csrf_token, login_as

from .conftest import IMPORT_DEFAULT_RANGE
from .factories import counts
from .test_import_channels import HOSTILE

VM_ID = "44444444-4444-4444-8444-444444444444"
OVF = vm_ovf(vm_id=VM_ID, name="web", macs=[0x0A0000000010, 0x0A0000000011]).encode()
#: One NIC outside every pool: a conflict unless bad MACs are reassigned.
BAD_OVF = vm_ovf(vm_id=VM_ID, name="legacy", macs=[0x001122334455, 0x0A0000000020]).encode()
TOKEN_RE = re.compile(r'name="upload" value="([^"]+)"')
PAGE = "/import/ovirt"


def _app(database: Database, tmp_path: Path, plugins: str) -> Flask:
    with database.session(write=True) as s:
        bootstrap(s, default_range=IMPORT_DEFAULT_RANGE)
        for role in ("viewer", "operator", "admin"):
            s.add(User(username=role, role=role, password_hash="x"))
    return create_app(
        {
            "database_url": str(database.url),
            "data_dir": str(tmp_path),
            "secret_key": "t" * 32,
            "plugins": plugins,
        },
        database=database,
    )


@pytest.fixture
def app(database: Database, tmp_path: Path) -> Flask:
    return _app(database, tmp_path, "ovirt")


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def _counts(app: Flask) -> dict[str, int]:
    with state(app).database.session() as s:
        return counts(s)


def _kept_files(app: Flask) -> list[Path]:
    folder = state(app).settings.data_dir / UPLOAD_DIR
    return sorted(folder.glob("*")) if folder.exists() else []


def _upload(
    client: FlaskClient, data: bytes, name: str = "vm.ovf", *, csrf: bool = True, **form: str
) -> TestResponse:
    fields: dict[str, Any] = {"file": FileStorage(io.BytesIO(data), filename=name), **form}
    if csrf:
        fields["csrf_token"] = csrf_token(client, PAGE)
    boundary, body = encode_multipart(fields)
    return client.post(PAGE, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def _token(page: TestResponse) -> str:
    found = TOKEN_RE.search(page.get_data(as_text=True))
    assert found, "no kept upload on the page"
    return found.group(1)


def _next(client: FlaskClient, step: str, token: str, **form: str) -> TestResponse:
    data = {"csrf_token": csrf_token(client, PAGE), "upload": token, **form}
    return client.post(f"{PAGE}/{step}", data=data)


def _text(page: TestResponse) -> str:
    return page.get_data(as_text=True)


def test_absent_when_the_plugin_is_disabled(database: Database, tmp_path: Path) -> None:
    with _app(database, tmp_path, "").test_client() as client:
        login_as(client, "admin")
        assert ">Import</a>" not in _text(client.get("/"))
        assert client.get(PAGE).status_code == 404


def test_nav_entry_and_roles(client: FlaskClient, app: Flask) -> None:
    login_as(client, "viewer")
    assert ">Import</a>" not in _text(client.get("/"))
    assert client.get(PAGE).status_code == 403
    assert _upload(client, OVF, scope="/").status_code == 403
    login_as(client, "operator")
    home = _text(client.get("/"))
    assert f'<a href="{PAGE}">Import</a>' in home
    page = client.get(PAGE)
    assert page.status_code == 200
    assert 'aria-current="page">Import</a>' in _text(page)
    before = _counts(app)
    dry = _upload(client, OVF, scope="/")
    assert dry.status_code == 200
    assert "Dry run: nothing was written." in _text(dry)
    assert "Only an administrator can apply" in _text(dry)
    assert ">Apply</button>" not in _text(dry)
    # The dry-run report page still highlights the menu entry.
    assert 'aria-current="page">Import</a>' in _text(dry)
    assert _next(client, "apply", _token(dry), review_scope="/").status_code == 403
    assert _counts(app) == before


def test_csrf_is_required_on_both_forms(client: FlaskClient, app: Flask) -> None:
    login_as(client, "admin")
    before = _counts(app)
    refused = _upload(client, OVF, csrf=False, scope="/")
    assert refused.status_code == 400
    assert "security token" in _text(refused)
    token = _token(_upload(client, OVF, scope="/"))
    applied = client.post(f"{PAGE}/apply", data={"upload": token, "review_scope": "/"})
    assert applied.status_code == 400
    assert _counts(app) == before


def test_dry_run_writes_nothing_then_apply_imports(client: FlaskClient, app: Flask) -> None:
    login_as(client, "admin")
    before = _counts(app)
    dry = _upload(client, OVF, scope="/")
    text = _text(dry)
    assert dry.status_code == 200
    assert "Dry run: nothing was written." in text
    assert "<dt>Kept</dt><dd>2</dd>" in text
    assert "0a:00:00:00:00:10" in text and "0a:00:00:00:00:11" in text
    assert _counts(app) == before
    kept = _kept_files(app)
    assert len(kept) == 1 and kept[0].read_bytes() == OVF
    assert (kept[0].stat().st_mode & 0o777) == 0o600
    applied = _next(client, "apply", _token(dry), review_scope="/")
    assert applied.status_code == 200
    assert "Applied: 1 VM(s) and 2 NIC(s) imported" in _text(applied)
    after = _counts(app)
    assert after["allocations"] == before["allocations"] + 2
    assert after["audit_events"] > before["audit_events"]
    with state(app).database.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "import.ovirt")).one()
        assert event.actor == "admin"
    assert _kept_files(app) == []
    # Applied uploads are gone: the same form cannot import twice.
    again = _next(client, "apply", _token(dry), review_scope="/")
    assert again.status_code == 410
    assert "no longer on the server" in _text(again)


def test_refused_import_lists_conflicts_then_reassigns(client: FlaskClient, app: Flask) -> None:
    login_as(client, "admin")
    before = _counts(app)
    dry = _upload(client, BAD_OVF, "legacy.ovf", scope="/")
    text = _text(dry)
    assert dry.status_code == 200
    assert "Applying would be refused: 1 NIC(s) have bad MACs" in text
    alert = text[text.index('role="alert"') : text.index("</div>", text.index('role="alert"'))]
    assert "00:11:22:33:44:55" in alert and "outside pool" in alert and "legacy" in alert
    token = _token(dry)
    refused = _next(client, "apply", token, review_scope="/")
    assert refused.status_code == 409
    assert "Refused: 1 NIC(s) have bad MACs" in _text(refused)
    assert "Nothing was written." in _text(refused)
    assert _counts(app) == before
    # The refused apply keeps the upload: tick "Reassign bad MACs" and apply again.
    applied = _next(client, "apply", token, review_scope="/", review_reassign_bad_macs="on")
    text = _text(applied)
    assert applied.status_code == 200
    assert "Applied:" in text
    assert re.search(r"<del>00:11:22:33:44:55</del> → <strong>0a:00:00:", text)
    assert _counts(app)["allocations"] == before["allocations"] + 2


def test_missing_scope_is_asked_for_without_a_new_upload(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    first = _upload(client, OVF)
    text = _text(first)
    assert first.status_code == 422
    assert 'id="scope-error"' in text and "choose the scope" in text
    again = _next(client, "review", _token(first), review_scope="/")
    assert again.status_code == 200
    assert "<dt>Kept</dt><dd>2</dd>" in _text(again)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_upload_shows_the_error_and_writes_nothing(
    client: FlaskClient, app: Flask, case: str
) -> None:
    name, data, words = HOSTILE[case]
    login_as(client, "admin")
    before = _counts(app)
    page = _upload(client, data, name, scope="/")
    text = _text(page)
    assert page.status_code == 422
    alert = re.search(r'<div class="alert" role="alert">([^<]*)</div>', text)
    assert alert, "no error message on the page"
    message = html.unescape(alert.group(1))
    assert message.startswith(name) and words in message
    assert message.endswith("Nothing was written.")
    assert 'name="upload"' not in text
    assert _counts(app) == before
    assert _kept_files(app) == []


def test_upload_bound(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    app.config[MAX_UPLOAD_KEY] = 2000
    page = _upload(client, OVF, scope="/")
    assert page.status_code == 413
    assert "larger than the 2,000 bytes" in _text(page)
    assert _kept_files(app) == []


def test_kept_uploads_belong_to_their_session(app: Flask) -> None:
    # Two clients without preserved contexts: a preserved one would share its g (and so its
    # cached CSRF token) with the other client's requests.
    client, other = app.test_client(), app.test_client()
    login_as(client, "admin")
    token = _token(_upload(client, OVF, scope="/"))
    login_as(other, "admin")
    assert _next(other, "apply", token, review_scope="/").status_code == 410
    assert _next(other, "review", "../../secret-key", review_scope="/").status_code == 410
    # An upload older than an hour has expired.
    (kept,) = _kept_files(app)
    old = time.time() - 3700
    os.utime(kept, (old, old))
    assert _next(client, "review", token, review_scope="/").status_code == 410
    assert _kept_files(app) == []


def test_a_session_keeps_only_its_latest_uploads(client: FlaskClient, app: Flask) -> None:
    login_as(client, "operator")
    tokens = [_token(_upload(client, OVF, scope="/")) for _ in range(4)]
    assert len(_kept_files(app)) == 3
    assert _next(client, "review", tokens[0], review_scope="/").status_code == 410
    assert _next(client, "review", tokens[-1], review_scope="/").status_code == 200
