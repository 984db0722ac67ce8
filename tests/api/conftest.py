"""Fixtures of the API tests: an app on a bootstrapped database and one token per role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from manager.app import create_app
from manager.core.actor import Actor
from manager.db import Allocation, AuditEvent, Base, Database, HeldMac, Pool, PoolRange, Scope
from manager.services import bootstrap
from manager.services.auth import ROLES, create_token
from manager.web import state
from tests.conftest import DEFAULT_RANGE

Headers = dict[str, str]


def prepare_database(url: str) -> Database:
    """The schema, the engine scope and the default pool (DEFAULT_RANGE)."""
    db = Database(url)
    Base.metadata.create_all(db.engine)
    with db.session(write=True) as session:
        bootstrap(session, default_range=DEFAULT_RANGE)
    return db


def make_app(url: str, data_dir: Path) -> Flask:
    """The whole application, as ``macpool serve`` builds it, without plugins."""
    return create_app({"database_url": url, "data_dir": str(data_dir), "plugins": ""})


def make_tokens(db: Database) -> dict[str, str]:
    """A bearer token per role (named after the role), created through the auth service."""
    plaintexts = {}
    with db.session(write=True) as session:
        for role in ROLES:
            _, plaintexts[role] = create_token(session, Actor("tests"), name=role, role=role)
    return plaintexts


@pytest.fixture
def api_db(db_url: str) -> Iterator[Database]:
    """A prepared database on each backend."""
    db = prepare_database(db_url)
    yield db
    db.dispose()


@pytest.fixture
def app(api_db: Database, db_url: str, tmp_path: Path) -> Iterator[Flask]:
    application = make_app(db_url, tmp_path)
    yield application
    # Close the app's pooled connections now, not whenever the garbage collector gets to them.
    state(application).database.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tokens(api_db: Database) -> dict[str, str]:
    return make_tokens(api_db)


@pytest.fixture
def auth(tokens: dict[str, str]) -> Callable[[str], Headers]:
    """``auth("operator")`` → the Authorization header of that role's token."""
    return lambda role: {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def admin(auth: Callable[[str], Headers]) -> Headers:
    return auth("admin")


@pytest.fixture
def operator(auth: Callable[[str], Headers]) -> Headers:
    return auth("operator")


@pytest.fixture
def viewer(auth: Callable[[str], Headers]) -> Headers:
    return auth("viewer")


def snapshot_of(db: Database) -> Callable[[], dict[str, Any]]:
    """What a refused write must leave unchanged: row counts and the rows' key fields."""

    def take() -> dict[str, Any]:
        with db.session() as session:
            counts = {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Pool, PoolRange, Scope, Allocation, HeldMac, AuditEvent)
            }
            pools = session.execute(
                select(Pool.id, Pool.name, Pool.description, Pool.allow_duplicates).order_by(
                    Pool.id
                )
            ).all()
            scopes = session.execute(
                select(Scope.id, Scope.path, Scope.pool_id).order_by(Scope.id)
            ).all()
            allocations = session.execute(
                select(Allocation.id, Allocation.mac, Allocation.state).order_by(Allocation.id)
            ).all()
        return {"counts": counts, "pools": pools, "scopes": scopes, "allocations": allocations}

    return take


@pytest.fixture
def snapshot(api_db: Database) -> Callable[[], dict[str, Any]]:
    return snapshot_of(api_db)
