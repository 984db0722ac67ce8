"""The SQLite writer queue serializes writers across threads and processes, forked ones too.

``macpool serve`` and ``macpool k8s webhook`` migrate and bootstrap the database in the master
process, then gunicorn forks the workers. A worker that inherited the master's lock-file
descriptor would share its ``flock``: two workers would both hold the "turn" and fall back on
SQLite's busy handler, whose sleeps (up to 100 ms each) made single writes take 50 ms-1 s.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from manager.db import Database


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
