"""Migrations: ``upgrade head`` on an empty database matches the models; ``downgrade base``
removes everything; upgrading again works. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from manager.db import Allocation, Base, Database
from manager.migrate import current_revision, downgrade, upgrade
from manager.services import bootstrap
from manager.services.handovers import identity_key
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


def test_pending_handovers_get_their_source_key_on_upgrade(db_url: str) -> None:
    """0008 backfills the source identity of hand-overs pending before it existed."""
    database = Database(db_url)
    try:
        upgrade(database, "0007")
        with database.session(write=True) as session:
            bootstrap(session, default_range=DEFAULT_RANGE)
            conn = session.connection()
            scope_id, pool_id = conn.execute(text("SELECT id, pool_id FROM scopes")).one()
            conn.execute(text("INSERT INTO held_macs (mac) VALUES (42), (43)"))
            source = {"scope_id": scope_id, "owner_kind": "ovirt-vm", "owner_name": "a:b"}
            for mac, handover in ((42, "pending"), (43, "final")):
                conn.execute(
                    text(
                        "INSERT INTO allocations (mac, pool_id, scope_id, owner_kind, owner_name,"
                        " interface, state, in_range, created_by, created_at, updated_at,"
                        " handover, source) VALUES (:mac, :pool, :scope, 'vm', :name, 'default',"
                        " 'allocated', true, 'test', :now, :now, :handover, :source)"
                    ),
                    {
                        "mac": mac,
                        "pool": pool_id,
                        "scope": scope_id,
                        "name": f"copy-{mac}",
                        "now": datetime.now(UTC),
                        "handover": handover,
                        "source": json.dumps({**source, "interface": f"nic:{mac}"}),
                    },
                )
        upgrade(database)
        with database.session() as session:
            keys = dict(session.execute(select(Allocation.mac, Allocation.source_key)).all())
        assert keys == {42: identity_key(scope_id, "ovirt-vm", "a:b", "nic:42"), 43: None}
    finally:
        database.dispose()
