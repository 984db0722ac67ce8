"""The login throttle: failures stored in the database, keyed by digests, forgotten after the
window (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.db import Database, LoginFailure
from manager.services.auth import LoginThrottle

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
THROTTLE = LoginThrottle(b"s" * 32, max_failures=3, window=timedelta(minutes=5))


def _rows(session: Session) -> int:
    session.flush()
    return session.scalar(select(func.count()).select_from(LoginFailure)) or 0


def test_blocks_at_the_limit_for_the_username_or_the_address(session: Session) -> None:
    alice = THROTTLE.keys("alice", "192.0.2.1")
    for minute in range(3):
        assert not THROTTLE.blocked(session, alice, now=T0 + timedelta(minutes=minute))
        THROTTLE.failed(session, alice, now=T0 + timedelta(minutes=minute))
    later = T0 + timedelta(minutes=3)
    assert THROTTLE.recent_failures(session, alice, now=later) == 3
    assert THROTTLE.blocked(session, alice, now=later)
    # The same name from elsewhere (any case), and another name from the same address.
    assert THROTTLE.blocked(session, THROTTLE.keys("ALICE", "198.51.100.7"), now=later)
    assert THROTTLE.blocked(session, THROTTLE.keys("bob", "192.0.2.1"), now=later)
    assert not THROTTLE.blocked(session, THROTTLE.keys("bob", "198.51.100.7"), now=later)


def test_failures_leave_the_window_and_the_table(session: Session) -> None:
    keys = THROTTLE.keys("alice", "192.0.2.1")
    for second in range(3):
        THROTTLE.failed(session, keys, now=T0 + timedelta(seconds=second))
    assert THROTTLE.blocked(session, keys, now=T0 + timedelta(minutes=4))
    # The first failure is exactly one window old: it no longer counts.
    assert not THROTTLE.blocked(session, keys, now=T0 + timedelta(minutes=5))
    assert _rows(session) == 6
    # The next failure, from anyone, deletes every row that left the window.
    THROTTLE.failed(session, THROTTLE.keys("bob", "-"), now=T0 + timedelta(minutes=6))
    assert _rows(session) == 2


def test_success_forgets_the_failures_of_its_keys_only(session: Session) -> None:
    alice = THROTTLE.keys("alice", "192.0.2.1")
    bob = THROTTLE.keys("bob", "198.51.100.7")
    for _ in range(2):
        THROTTLE.failed(session, alice, now=T0)
        THROTTLE.failed(session, bob, now=T0)
    THROTTLE.succeeded(session, alice)
    assert THROTTLE.recent_failures(session, alice, now=T0) == 0
    assert THROTTLE.recent_failures(session, bob, now=T0) == 2


def test_only_keyed_digests_are_stored(session: Session) -> None:
    typed = "correct horse battery"  # a password typed into the username field
    THROTTLE.failed(session, THROTTLE.keys(typed, "192.0.2.1"), now=T0)
    stored = set(session.scalars(select(LoginFailure.key)))
    assert len(stored) == 2
    assert all(len(key) == 64 and "horse" not in key and "192.0" not in key for key in stored)
    other_secret = LoginThrottle(b"o" * 32)
    assert stored.isdisjoint(other_secret.keys(typed, "192.0.2.1"))
    assert stored == set(THROTTLE.keys(typed, "192.0.2.1"))


def test_every_session_sees_the_same_failures(database: Database) -> None:
    """Two processes' sessions (here two sessions) count into one total."""
    keys = THROTTLE.keys("alice", "192.0.2.1")
    for _ in range(3):
        with database.session(write=True) as session:
            THROTTLE.failed(session, keys, now=T0)
    with database.session() as session:
        assert THROTTLE.blocked(session, keys, now=T0 + timedelta(seconds=1))
