"""Prepared statements store and read exactly what Core execution does, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from manager.core.errors import DatabaseUnavailable
from manager.db import AuditEvent, Database, HeldMac, Pool
from manager.db.prepared import Prepared

_audit = AuditEvent.__table__
_held = HeldMac.__table__
_pool = Pool.__table__
KEYS = ("at", "actor", "action", "target_type", "target_id", "target", "severity", "details")


def _event(action: str, moment: datetime) -> dict[str, object]:
    return {
        "at": moment,
        "actor": "tester",
        "action": action,
        "target_type": "mac",
        "target_id": None,
        "target": "02:00:00:00:00:01",
        "severity": "info",
        "details": {"nested": [1, "two", None], "flag": True},
    }


def test_typed_values_round_trip_as_core_stores_them(session: Session) -> None:
    moment = datetime(2026, 11, 23, 20, 15, 1, 123456, tzinfo=UTC)
    conn = session.connection()
    Prepared(insert(_audit), keys=KEYS).run(conn, _event("prepared", moment))
    conn.execute(insert(_audit), _event("core", moment))
    # Read back through Core: the two rows hold the same typed values.
    rows = conn.execute(
        select(_audit.c.action, _audit.c.at, _audit.c.details, _audit.c.target_id).where(
            _audit.c.action.in_(["prepared", "core"])
        )
    ).all()
    by_action = {row.action: row[1:] for row in rows}
    assert by_action["prepared"] == by_action["core"]
    # Byte for byte as the driver sees them (SQLite keeps datetimes and JSON as text).
    raw = conn.exec_driver_sql(
        "SELECT action, at, details, target_id FROM audit_events"
        " WHERE action IN ('prepared', 'core')"
    ).all()
    stored = {row[0]: tuple(row[1:]) for row in raw}
    assert stored["prepared"] == stored["core"]
    # And through the prepared select, with the types' result processors.
    read = Prepared(
        select(_audit.c.at, _audit.c.details).where(_audit.c.action == bindparam("action"))
    )
    at, details = read.rows(conn, {"action": "prepared"})[0]
    assert details == {"nested": [1, "two", None], "flag": True}
    assert at.replace(tzinfo=UTC) == moment


@pytest.mark.parametrize("shared", [True, False], ids=["one-moment", "three-moments"])
def test_many_rows_store_what_one_row_at_a_time_stores(session: Session, shared: bool) -> None:
    """run_many processes its parameters column by column (a value shared by every row is bound
    once): the same values as run per row."""
    moment = datetime(2026, 11, 23, 20, 15, 1, 123456, tzinfo=UTC)
    conn = session.connection()
    statement = Prepared(insert(_audit), keys=KEYS)
    events = [_event(f"many-{shared}-{i}", moment) for i in range(3)]
    events[1]["details"] = None
    events[2]["target_id"] = "x"
    if not shared:
        events[2]["at"] = moment.replace(second=2)
    statement.run_many(conn, events)
    for event in events:
        statement.run(conn, {**event, "action": f"one-{event['action']}"})
    names = ", ".join(f"'{a}', 'one-{a}'" for a in (e["action"] for e in events))
    raw = conn.exec_driver_sql(
        f"SELECT action, at, actor, details, target_id FROM audit_events WHERE action IN ({names})"
    ).all()
    stored = {row[0]: tuple(row[1:]) for row in raw}
    assert len(stored) == 6
    for event in events:
        assert stored[str(event["action"])] == stored[f"one-{event['action']}"]


def test_booleans_come_back_as_booleans(session: Session) -> None:
    conn = session.connection()
    statement = Prepared(select(_pool.c.allow_duplicates, _pool.c.is_default).limit(1))
    row = statement.first(conn, {})
    assert row is not None
    assert all(isinstance(value, bool) for value in row)


def test_statement_bound_values_need_no_parameter(session: Session) -> None:
    conn = session.connection()
    Prepared(insert(_held), keys=["mac"]).run_many(conn, [{"mac": 5}, {"mac": 6}, {"mac": 7}])
    limited = Prepared(select(_held.c.mac).where(_held.c.mac >= bindparam("low")).limit(2))
    assert limited.rows(conn, {"low": 5}) == [(5,), (6,)]
    assert limited.scalar(conn, {"low": 7}) == 7
    assert limited.first(conn, {"low": 8}) is None


def test_driver_errors_are_sqlalchemy_errors(session: Session) -> None:
    conn = session.connection()
    statement = Prepared(insert(_held), keys=["mac"])
    statement.run(conn, {"mac": 42})
    with pytest.raises(IntegrityError):
        statement.run(conn, {"mac": 42})


def test_missing_parameter_is_a_key_error(session: Session) -> None:
    statement = Prepared(select(_held.c.mac).where(_held.c.mac == bindparam("mac")))
    with pytest.raises(KeyError, match="mac"):
        statement.rows(session.connection(), {})


def test_statements_that_need_per_call_compilation_are_refused(session: Session) -> None:
    conn = session.connection()
    expanding = Prepared(
        select(_held.c.mac).where(_held.c.mac.in_(bindparam("macs", expanding=True)))
    )
    with pytest.raises(ValueError, match="expanding"):
        expanding.rows(conn, {"macs": [1, 2]})
    defaults = Prepared(insert(_audit), keys=["actor", "action", "target_type"])
    with pytest.raises(ValueError, match="defaults"):
        defaults.run(conn, {"actor": "a", "action": "b", "target_type": "c"})


def test_outside_a_transaction_is_refused(session: Session) -> None:
    with session.get_bind().connect() as conn, pytest.raises(RuntimeError, match="transaction"):
        Prepared(select(_held.c.mac)).rows(conn, {})


# Terminating a backend needs PostgreSQL: this test runs on it only.
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_lost_connection_is_invalidated(database: Database) -> None:
    statement = Prepared(select(_held.c.mac).where(_held.c.mac == bindparam("mac")))
    with database.session(write=True) as session:
        conn = session.connection()
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with database.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
        # A lost connection is an outage, as with Connection.execute.
        with pytest.raises(DatabaseUnavailable):
            statement.rows(conn, {"mac": 1})
        assert conn.invalidated
        session.rollback()
    # The pool hands out a working connection afterwards.
    with database.session(write=True) as session:
        assert statement.rows(session.connection(), {"mac": 1}) == []
