"""The gunicorn application wrapper every MacPool listener runs in."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from manager import serve as serve_module
from manager.core.actor import Owner
from manager.db import Database
from manager.services import allocate_mac, bootstrap, expire_pending, find_allocations
from manager.wsgi_server import _Gunicorn
from tests.conftest import ACTOR, DEFAULT_RANGE


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_a_worker_freezes_what_it_loaded_out_of_the_cyclic_collector() -> None:
    """Full collections must not walk the modules and the app (a 40-60 ms pause per pass)."""
    built: list[object] = []

    def factory() -> object:
        app = {"routes": [object() for _ in range(100)]}
        built.append(app)
        return app

    loader = _Gunicorn(factory, {"bind": ["127.0.0.1:0"]})
    assert gc.get_freeze_count() == 0
    app = loader.load()
    assert app is built[0]
    assert gc.get_freeze_count() > 0
    assert not any(obj is app for obj in gc.get_objects())  # frozen objects are not tracked


def test_the_sweep_expires_in_short_transactions(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead import's staged rows (10^5 of them) must not hold the write lock in one go."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        for i in range(5):
            allocate_mac(
                s,
                ACTOR,
                scope="/",
                owner=Owner("vm", f"vm{i}"),
                interface="e",
                ttl_seconds=1,
                now=datetime.now(UTC) - timedelta(hours=1),
            )
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> int:
        released = expire_pending(*args, **kwargs)
        calls.append(released)
        return released

    monkeypatch.setattr(serve_module, "EXPIRE_BATCH", 2)
    monkeypatch.setattr(serve_module, "expire_pending", counted)
    assert serve_module._expire(database) == 5
    assert calls == [2, 2, 1]
    with database.session() as s:
        assert find_allocations(s).total == 0


class _FakeProcess:
    """A stand-in for a plugin process's Popen (``returncode`` None while it runs)."""

    def __init__(self, on_poll: Any = None) -> None:
        self.returncode: int | None = None
        self.on_poll = on_poll

    def poll(self) -> int | None:
        if self.on_poll is not None:
            self.on_poll()
            self.on_poll = None
            self.returncode = 1  # it died meanwhile
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode or 0

    def kill(self) -> None:
        self.returncode = -9


def test_a_plugin_process_that_dies_while_serve_stops_is_not_started_again_behind_it() -> None:
    """The supervisor finds a process dead just as ``serve`` stops: whatever it starts in
    that moment is ended by the stop too (a late start had outlived ``serve``)."""
    import threading

    halt = threading.Event()
    supervisor = serve_module._PluginProcesses([("kubernetes", 1)], halt)
    supervisor.RESTART_DELAY = 0.01
    launched: list[_FakeProcess] = []
    stopper: list[threading.Thread] = []

    def stop_now() -> None:
        # serve stops while the supervisor looks at its processes (it waits its turn).
        thread = threading.Thread(target=supervisor.stop)
        stopper.append(thread)
        thread.start()
        thread.join(timeout=0.3)

    def launch(target: tuple[str, int]) -> _FakeProcess:
        process = _FakeProcess(on_poll=stop_now if not launched else None)
        launched.append(process)
        return process

    supervisor._launch = launch  # type: ignore[method-assign, assignment]
    supervisor.start()
    supervisor.join(timeout=5)
    stopper[0].join(timeout=5)
    assert not supervisor.is_alive() and not stopper[0].is_alive()
    # Nothing the supervisor started is left running: each one died or was ended.
    assert len(launched) >= 2
    assert all(process.returncode is not None for process in launched), [
        process.returncode for process in launched
    ]


def test_a_supervisor_stopped_before_it_runs_starts_nothing() -> None:
    import threading

    halt = threading.Event()
    supervisor = serve_module._PluginProcesses([("kubernetes", 0)], halt)
    launched: list[tuple[str, int]] = []
    supervisor._launch = lambda target: launched.append(target)  # type: ignore[method-assign, assignment, func-returns-value]
    supervisor.stop()
    supervisor.start()
    supervisor.join(timeout=5)
    assert launched == []


def test_launching_a_plugin_process_does_not_wait_on_a_worker_forked_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn forks its workers from the main thread while the supervisor thread starts the
    plugin processes. Here a "worker" is forked right after the launch makes a pipe (the
    moment that hurt): Popen's fork-and-wait path then waited for that worker's whole life,
    and the reconciler never started."""
    import os
    import threading
    import time

    real_pipe = os.pipe
    workers: list[int] = []

    def pipe_then_fork() -> tuple[int, int]:
        ends = real_pipe()
        pid = os.fork()
        if pid == 0:  # the worker: inherits every descriptor, lives on
            time.sleep(5)
            os._exit(0)
        workers.append(pid)
        return ends

    monkeypatch.setattr(os, "pipe", pipe_then_fork)
    supervisor = serve_module._PluginProcesses([], threading.Event())
    started = time.monotonic()
    try:
        process = supervisor._launch(("no-such-plugin", 0))
        took = time.monotonic() - started
        monkeypatch.undo()
        process.wait(timeout=30)
    finally:
        for pid in workers:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert took < 2.5, took
