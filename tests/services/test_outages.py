"""manager.db reports an unavailable database as DatabaseUnavailable, whatever the cause."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

import manager.db.session as db_session
from manager.core.errors import DatabaseUnavailable
from manager.db import Database
from tests.conftest import POSTGRES_URL
from tests.faults.harness import FreezingProxy
from tests.plugins.kubernetes.webhook_harness import free_port


def test_refused_connection_is_unavailable_and_later_ones_fail_at_once() -> None:
    db = Database(f"postgresql+psycopg://macpool@127.0.0.1:{free_port()}/macpool")
    for _ in range(2):  # the second one meets the breaker instead of the network
        with pytest.raises(DatabaseUnavailable), db.session() as session:
            session.execute(text("SELECT 1"))
    db.dispose()


def test_busy_sqlite_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_session, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "busy.db"
    db = Database(f"sqlite:///{path}")
    with db.session(write=True) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    try:
        with pytest.raises(DatabaseUnavailable), db.session(write=True) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with db.session(write=True) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    db.dispose()


@pytest.mark.postgres
def test_hung_server_round_trip_is_broken() -> None:
    """A proxy that stops forwarding: the statement ends with DatabaseUnavailable, and the
    pool works again once the server answers."""
    if not POSTGRES_URL:
        pytest.skip("MACPOOL_TEST_POSTGRES_URL is not set")
    url = make_url(POSTGRES_URL)
    proxy = FreezingProxy(url.port or 5432)
    db = Database(url.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        with pytest.raises(DatabaseUnavailable), db.session() as session:
            session.execute(text("SELECT 1"))
            proxy.frozen.set()
            session.execute(text("SELECT 2"))
        assert db.watchdog is not None and db.watchdog.broken == 1
        proxy.frozen.clear()
        answered = None
        for _ in range(50):  # the breaker lets a probe through within a second or two
            try:
                with db.session() as session:
                    answered = session.execute(text("SELECT 3")).scalar()
                break
            except DatabaseUnavailable:
                time.sleep(0.1)
        assert answered == 3
    finally:
        proxy.frozen.clear()
        db.dispose()
        proxy.close()


@pytest.mark.postgres
def test_statements_time_out_except_in_migrations() -> None:
    """Requests' statements end after STATEMENT_TIMEOUT; schema migrations may run long."""
    if not POSTGRES_URL:
        pytest.skip("MACPOOL_TEST_POSTGRES_URL is not set")
    db = Database(POSTGRES_URL)
    migrations = db.migration_engine()
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "3s"
        with migrations.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
        with pytest.raises(DatabaseUnavailable), db.session() as session:
            session.execute(text("SELECT pg_sleep(5)"))
    finally:
        migrations.dispose()
        db.dispose()
