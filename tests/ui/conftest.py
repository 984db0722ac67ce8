"""UI fixtures: an app on a fresh database with one account per role, and form helpers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.app import create_app
from manager.db import AuditEvent, Database, User
from manager.services import bootstrap
from manager.services.auth import hash_password
from tests.conftest import DEFAULT_RANGE

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def password_hash() -> str:
    """scrypt is slow on purpose: hash the shared test password once."""
    return hash_password(PASSWORD)


def make_app(database: Database, tmp_path: Path, password_hash: str) -> Flask:
    """An app on ``database`` with the engine scope, the default pool and three accounts."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        for role in ROLES:
            s.add(User(username=role, role=role, password_hash=password_hash))
    app = create_app(
        {
            "database_url": str(database.url),
            "data_dir": str(tmp_path),
            "secret_key": "t" * 32,
            "plugins": "",
        },
        database=database,
    )
    app.config["MACPOOL_UI_LOGIN_DELAY"] = 0
    return app


@pytest.fixture
def app(database: Database, tmp_path: Path, password_hash: str) -> Flask:
    return make_app(database, tmp_path, password_hash)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def login_as(client: FlaskClient, username: str) -> None:
    """Put ``username`` in the session (the login form itself is tested in test_auth)."""
    app = client.application
    with app.app_context():
        from manager.web import database

        with database().session() as s:
            uid = s.scalars(select(User.id).where(User.username == username)).one()
    with client.session_transaction() as sess:
        sess["uid"] = uid


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """A valid CSRF token of this client's session, read from a rendered form."""
    page = client.get(path)
    found = CSRF_RE.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def post(client: FlaskClient, path: str, data: dict[str, object] | None = None, **kw: object):
    """POST a form with a valid CSRF token."""
    return client.post(path, data={"csrf_token": csrf_token(client), **(data or {})}, **kw)


def event_count(app: Flask) -> int:
    with app.app_context():
        from manager.web import database

        with database().session() as s:
            return s.scalar(select(func.count()).select_from(AuditEvent)) or 0


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    login_as(client, "admin")
    return client


@pytest.fixture
def viewer(client: FlaskClient) -> FlaskClient:
    login_as(client, "viewer")
    return client


@pytest.fixture
def operator(client: FlaskClient) -> FlaskClient:
    login_as(client, "operator")
    return client


@contextmanager
def app_session(app: Flask, *, write: bool = True) -> Iterator[Session]:
    """A committed unit of work on the app's database, for arranging and checking data."""
    with app.app_context(), app.extensions["macpool"].database.session(write=write) as s:
        yield s


def hold_duplicate(app: Flask, *, first_octet: str, owners: tuple[str, ...]) -> str:
    """A duplicates-allowing pool ``XX:00:00:00:00:00-ff`` whose ``XX:..:05`` every owner holds."""
    from manager.core.actor import Actor, Owner
    from manager.services import allocate_mac, create_pool, create_scope

    prefix = f"{first_octet}:00:00:00:00"
    mac = f"{prefix}:05"
    with app_session(app) as s:
        pool = create_pool(
            s,
            Actor("t"),
            name=f"shared-{first_octet}",
            ranges=[f"{prefix}:00-{prefix}:ff"],
            allow_duplicates=True,
        )
        scope = create_scope(
            s, Actor("t"), kind="datacenter", name=f"dup-{first_octet}", pool_id=pool.id
        )
        for name in owners:
            allocate_mac(
                s, Actor("t"), scope=scope, owner=Owner("vm", name), interface="nic1", mac=mac
            )
    return mac


@contextmanager
def serving(app: Flask, database: Database) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for a real browser; its base URL.

    Afterwards the server stops, the per-process allocator index of ``database`` is dropped and
    the database disposed.
    """
    from werkzeug.serving import make_server

    from manager.services.index_cache import forget

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)
        with database.session() as s:
            forget(s)
        database.dispose()
