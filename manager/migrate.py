"""Run the Alembic migrations shipped in the ``migrations`` package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

from manager.db import Database


def alembic_config(database: Database, engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.attributes["engine"] = engine or database.engine
    return config


@contextmanager
def _migration_config(database: Database) -> Iterator[Config]:
    """Migrations run on an engine without statement timeouts (see Database.migration_engine)."""
    engine = database.migration_engine()
    try:
        yield alembic_config(database, engine)
    finally:
        if engine is not database.engine:
            engine.dispose()


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the latest by default)."""
    with _migration_config(database) as config:
        command.upgrade(config, revision)


def downgrade(database: Database, revision: str) -> None:
    with _migration_config(database) as config:
        command.downgrade(config, revision)


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return None if row is None else str(row[0])


__all__ = ["alembic_config", "current_revision", "downgrade", "upgrade"]
