"""Shared helpers for the oVirt reader tests: sample paths and archive builders."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from manager.app import create_app
from manager.cli import main
from manager.core.actor import Actor
from manager.db import Base, Database
from manager.services import bootstrap
from manager.services.auth import create_token
from manager.web import state

_REPO = Path(__file__).resolve().parents[3]
#: shared/ sits beside the repository (locally and in CI); MACPOOL_SHARED_DIR overrides it.
SAMPLES = Path(os.environ.get("MACPOOL_SHARED_DIR", _REPO.parent / "shared")) / "samples" / "ovirt"


def tar_bytes(members: dict[str, bytes], *, mode: str = "w") -> bytes:
    """A tar archive (``mode`` ``w`` or ``w:gz``) holding the given regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive holding the given files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sample(relative: str) -> Path:
    """Path of a file in the shared oVirt samples."""
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"sample {relative} not available")
    return path


#: MacPool's default range in the import tests: clear of every range the oVirt samples use.
IMPORT_DEFAULT_RANGE = "0a:00:00:00:00:00-0a:00:00:ff:ff:ff"


@pytest.fixture
def import_session(database: Database) -> Iterator[Session]:
    """A write session on a bootstrapped database whose default pool overlaps no sample."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=IMPORT_DEFAULT_RANGE)
    with database.session(write=True) as s:
        yield s


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A bootstrapped database (default pool clear of the samples) for the channel tests."""
    database = Database(db_url)
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as session:
        bootstrap(session, default_range=IMPORT_DEFAULT_RANGE)
    yield database
    database.dispose()


@pytest.fixture
def cli(db: Database, db_url: str, tmp_path: Path) -> Callable[..., Any]:
    """``macpool import ovirt ARGS…`` on ``db``, through click's runner."""
    env = {"MACPOOL_DATABASE_URL": db_url, "MACPOOL_DATA_DIR": str(tmp_path)}

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, ["import", "ovirt", *args], env=env)

    return invoke


@pytest.fixture
def client(db: Database, db_url: str, tmp_path: Path) -> Iterator[FlaskClient]:
    """A test client of an app with the oVirt plugin on ``db`` (REST API tests)."""
    app = create_app({"database_url": db_url, "data_dir": str(tmp_path), "plugins": "ovirt"})
    yield app.test_client()
    state(app).database.dispose()


@pytest.fixture
def headers(db: Database) -> dict[str, dict[str, str]]:
    """Bearer-token headers per role."""
    found = {}
    with db.session(write=True) as session:
        for role in ("viewer", "operator", "admin"):
            _, token = create_token(session, Actor("tests"), name=role, role=role)
            found[role] = {"Authorization": f"Bearer {token}"}
    return found
