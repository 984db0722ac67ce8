"""The SQLite writer queue serializes writers across threads and processes, forked ones too.

``macpool serve`` and ``macpool k8s webhook`` migrate and bootstrap the database in the master
process, then gunicorn forks the workers. A worker that inherited the master's lock-file
descriptor would share its ``flock``: two workers would both hold the "turn" and fall back on
SQLite's busy handler, whose sleeps (up to 100 ms each) made single writes take 50 ms-1 s.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from manager.db import Database
from manager.db import session as session_module


def _take_turn(url: str, entered: Any, release: Any) -> None:
    database = Database(url)
    with database.writer_turn():
        entered.set()
        release.wait(10)


def test_a_forked_child_queues_behind_its_parent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'macpool.db'}"
    database = Database(url)
    with database.writer_turn():  # the master's own write before the fork (migrate, bootstrap)
        pass
    context = multiprocessing.get_context("fork")
    entered, release = context.Event(), context.Event()
    child = context.Process(target=_take_turn, args=(url, entered, release))
    try:
        with database.writer_turn():
            child.start()
            assert not entered.wait(1.0), "the child wrote while the parent held the turn"
        assert entered.wait(10), "the child never got its turn"
    finally:
        release.set()
        child.join(10)
    assert child.exitcode == 0


def test_the_parent_queues_behind_a_forked_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'macpool.db'}"
    database = Database(url)
    with database.writer_turn():
        pass
    context = multiprocessing.get_context("fork")
    entered, release = context.Event(), context.Event()
    child = context.Process(target=_take_turn, args=(url, entered, release))
    child.start()
    got_turn = threading.Event()

    def parent_turn() -> None:
        with database.writer_turn():
            got_turn.set()

    waiter = threading.Thread(target=parent_turn)
    try:
        assert entered.wait(10)
        waiter.start()
        assert not got_turn.wait(1.0), "the parent wrote while the child held the turn"
    finally:
        release.set()
        child.join(10)
    waiter.join(10)
    assert got_turn.is_set()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'macpool.db'}")
    inside = 0
    most = 0
    lock = threading.Lock()

    def writer() -> None:
        nonlocal inside, most
        for _ in range(20):
            with database.writer_turn():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.001)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1


# --- background WAL checkpoints -----------------------------------------------------------------


def _writes(database: Database, count: int) -> None:
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(count):
        with database.session(write=True) as session:
            session.connection().exec_driver_sql(f"INSERT INTO t (v) VALUES ('{'x' * 500}{i}')")


def _rows_in_file_alone(path: Path, copy: Path) -> int:
    """Rows a reader sees in the database file without its WAL: the checkpointed ones."""
    copy.write_bytes(path.read_bytes())
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself is not checkpointed yet
        return 0
    except sqlite3.DatabaseError:  # copied while a checkpoint wrote the file: a torn copy
        return 0
    finally:
        conn.close()


def test_writes_are_checkpointed_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL", 0.02)
    path = tmp_path / "macpool.db"
    database = Database(f"sqlite:///{path}")
    with database.engine.connect() as conn:
        limit = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert limit == session_module.WAL_AUTOCHECKPOINT_PAGES  # commits do not checkpoint
    _writes(database, 200)  # a few hundred WAL pages: far below the commit's own limit
    deadline = time.monotonic() + 10
    while _rows_in_file_alone(path, tmp_path / "copy.db") < 200:
        assert time.monotonic() < deadline, "the WAL was never checkpointed"
        time.sleep(0.05)
    database.dispose()


def test_the_checkpoint_thread_ends_when_idle_and_returns_with_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL", 0.01)
    monkeypatch.setattr(session_module, "CHECKPOINT_IDLE_ROUNDS", 3)
    path = tmp_path / "macpool.db"
    database = Database(f"sqlite:///{path}")
    _writes(database, 1)
    checkpointer = session_module._queues[str(path)].checkpointer
    assert checkpointer.running
    deadline = time.monotonic() + 10
    while checkpointer.running:
        assert time.monotonic() < deadline, "the idle checkpoint thread never ended"
        time.sleep(0.01)
    _writes(database, 1)
    assert checkpointer.running
    database.dispose()
