"""``macpool serve``: migrate, bootstrap, then run gunicorn (and plugin processes)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading

from manager.config import Settings
from manager.core.actor import SYSTEM
from manager.core.errors import DatabaseUnavailable
from manager.db import Database
from manager.plugins import enabled_plugins
from manager.services import expire_pending
from manager.services.index_cache import prune_history
from manager.startup import prepare
from manager.wsgi_server import gunicorn_options, run_gunicorn

log = logging.getLogger("macpool")


def _prepare_metrics_dir(settings: Settings) -> None:
    """Share Prometheus counters across gunicorn workers (multiprocess mode), fresh per start."""
    directory = settings.data_dir / "metrics" / "api"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(directory))


#: Expired allocations released per write transaction by the sweep (others write in between).
EXPIRE_BATCH = 500


def _expire(database: Database) -> int:
    """Release every expired pending allocation, :data:`EXPIRE_BATCH` per transaction."""
    total = 0
    while True:
        with database.session(write=True) as session:
            released = expire_pending(session, SYSTEM, limit=EXPIRE_BATCH)
        total += released
        if released < EXPIRE_BATCH:
            return total


def _sweeper(settings: Settings, stop: threading.Event) -> None:
    """Release expired pending allocations and prune allocator history, periodically."""
    database = Database.from_settings(settings)
    while not stop.wait(settings.expire_interval):
        try:
            released = _expire(database)
            with database.session(write=True) as session:
                prune_history(session)
            if released:
                log.info("released %d expired pending allocation(s)", released)
        except DatabaseUnavailable as exc:  # an outage: say so once per sweep, no traceback
            log.warning("expiry sweep skipped: the database is unavailable (%s)", exc.detail)
        except Exception:  # keep sweeping: a passing database error must not stop it
            log.exception("expiry sweep failed")


def serve(settings: Settings, *, bind: str | None = None) -> None:
    """Serve UI + API on ``bind``; plugin processes run beside it until it stops."""
    from manager.app import create_app

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plugins = enabled_plugins(settings)  # unknown plugin names stop us before any change
    prepare(settings)
    _prepare_metrics_dir(settings)
    stop = threading.Event()
    sweeper = threading.Thread(target=_sweeper, args=(settings, stop), daemon=True)
    sweeper.start()
    supervisor = _PluginProcesses(
        [(plugin.name, i) for plugin in plugins for i in range(len(plugin.processes(settings)))],
        stop,
    )
    supervisor.start()
    master = os.getpid()
    try:
        run_gunicorn(
            lambda: create_app(settings=settings), gunicorn_options(settings, bind or settings.bind)
        )
    finally:
        if os.getpid() == master:  # gunicorn's forked workers unwind through here too
            stop.set()
            supervisor.stop()


class _PluginProcesses(threading.Thread):
    """Runs each plugin process as ``python -m manager.plugin_process`` and restarts it if it
    dies (after a pause, so a crash loop does not spin).

    Launches and :meth:`stop` take turns on one lock: a process that exits while ``serve``
    stops (SIGTERM reaches the whole process group, or the stop itself ends it) is never
    started again behind the stop's back. Such a late start outlived ``serve``; a reconciler
    started that way kept renewing its Lease, and every other replica waited on it for good.
    """

    RESTART_DELAY = 5.0

    def __init__(self, targets: list[tuple[str, int]], stop: threading.Event) -> None:
        super().__init__(name="plugin-processes", daemon=True)
        self.targets = targets
        self.halt = stop
        self.running: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._turn = threading.Lock()

    def _launch(self, target: tuple[str, int]) -> subprocess.Popen[bytes]:
        name, index = target
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # close_fds=False lets Popen use posix_spawn. Its default path forks, then waits on a
        # pipe until the child has exec'd; gunicorn's arbiter forks its workers from another
        # thread of this process meanwhile, and a worker forked at that moment keeps the
        # pipe open for its whole life: the launch never returned, and the plugin processes
        # after it never started. (Python opens its descriptors non-inheritable, so nothing
        # of this process leaks into the child.)
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "manager.plugin_process", name, str(index)],
            env=env,
            close_fds=False,
        )

    def run(self) -> None:
        with self._turn:
            if self.halt.is_set():
                return
            for target in self.targets:
                self.running[target] = self._launch(target)
        while not self.halt.wait(self.RESTART_DELAY):
            with self._turn:
                if self.halt.is_set():
                    return
                for target, proc in list(self.running.items()):
                    if proc.poll() is not None:
                        log.warning(
                            "plugin process %s[%d] exited with %s; restarting",
                            *target,
                            proc.returncode,
                        )
                        self.running[target] = self._launch(target)

    def stop(self) -> None:
        with self._turn:
            self.halt.set()
            procs = list(self.running.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


__all__ = ["serve"]
