"""Migrations: ``upgrade head`` on an empty database matches the models; ``downgrade base``
removes everything; upgrading again works. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from manager.db import Base, Database
from manager.migrate import current_revision, downgrade, upgrade
from manager.services import bootstrap
from tests.conftest import DEFAULT_RANGE


def _diff(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, Base.metadata))


def _tables(database: Database) -> set[str]:
    with database.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_upgrade_matches_models_downgrade_removes_all(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert current_revision(database) is None
        upgrade(database)
        head = current_revision(database)
        assert head is not None
        assert _tables(database) == set(Base.metadata.tables) | {"alembic_version"}
        assert _diff(database) == []
        downgrade(database, "base")
        assert _tables(database) <= {"alembic_version"}
        assert current_revision(database) is None
        upgrade(database)
        assert current_revision(database) == head
        assert _diff(database) == []
        with database.session(write=True) as session:  # the schema is usable
            assert bootstrap(session, default_range=DEFAULT_RANGE).created
    finally:
        database.dispose()
