"""Shared fixtures: a fresh database per test, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import text
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.db import Base, Database
from manager.services import bootstrap
from manager.services.index_cache import forget

settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

POSTGRES_URL = os.environ.get("MACPOOL_TEST_POSTGRES_URL", "")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ACTOR = Actor("tester")
DEFAULT_RANGE = "02:00:00:00:00:00-02:00:00:ff:ff:ff"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each backend (PostgreSQL skipped when not configured)."""
    if request.param == "postgres":
        if not POSTGRES_URL:
            if os.environ.get("MACPOOL_REQUIRE_POSTGRES"):
                pytest.fail("MACPOOL_REQUIRE_POSTGRES is set but MACPOOL_TEST_POSTGRES_URL is not")
            pytest.skip("MACPOOL_TEST_POSTGRES_URL is not set")
        db = Database(POSTGRES_URL)
        with db.engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.dispose()
        return POSTGRES_URL
    return f"sqlite:///{tmp_path / 'macpool.db'}"


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """A database with the schema created, on each backend."""
    db = Database(db_url)
    Base.metadata.create_all(db.engine)
    yield db
    with db.session() as session:
        forget(session)
    db.dispose()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    """A write session with the engine scope and a known default pool; committed on success."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
    with database.session(write=True) as s:
        yield s


@pytest.fixture
def actor() -> Actor:
    return ACTOR
