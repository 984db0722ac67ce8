"""Alembic environment: the engine comes from MacPool (manager.migrate) or MACPOOL_* settings."""

from __future__ import annotations

from alembic import context

from manager.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from manager.config import load_settings
        from manager.db import Database

        engine = Database(load_settings().effective_database_url).engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("Offline (SQL script) migrations are not supported; run `macpool db upgrade`.")
run_migrations_online()
