"""``macpool serve``: migrate, bootstrap, then run gunicorn (and plugin processes)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from manager.config import Settings
from manager.core.actor import SYSTEM
from manager.core.errors import DatabaseUnavailable
from manager.core.mac import format_mac_int
from manager.db import Database
from manager.migrate import upgrade
from manager.plugins import enabled_plugins
from manager.services import bootstrap, expire_pending
from manager.services.auth import ensure_admin_user
from manager.services.index_cache import prune_history

log = logging.getLogger("macpool")

PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


def prepare(settings: Settings, *, echo: Callable[[str], None] = print) -> Database:
    """Create the data directory, migrate, create the default pool and the admin account."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database.from_settings(settings)
    upgrade(database)
    with database.session(write=True) as session:
        result = bootstrap(session, default_range=settings.default_range or None)
        password = ensure_admin_user(session, SYSTEM)
    if result.created:
        ranges = ", ".join(
            f"{format_mac_int(r.start_mac)}-{format_mac_int(r.end_mac)}"
            for r in result.default_pool.ranges
        )
        echo(f"Created the default pool '{result.default_pool.name}' ({ranges}).")
    if password is not None:
        path = settings.data_dir / PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        echo(f"Created the admin account 'admin' with password: {password}")
        echo(f"(also written to {Path(path).resolve()}, mode 0600; change it after logging in)")
    return database


def _prepare_metrics_dir(settings: Settings) -> None:
    """Share Prometheus counters across gunicorn workers (multiprocess mode), fresh per start."""
    directory = settings.data_dir / "metrics" / "api"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(directory))


def _child_exit(_server: Any, worker: Any) -> None:
    """Let the metrics of a finished worker stop counting as live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _sweeper(settings: Settings, stop: threading.Event) -> None:
    """Release expired pending allocations and prune allocator history, periodically."""
    database = Database.from_settings(settings)
    while not stop.wait(settings.expire_interval):
        try:
            with database.session(write=True) as session:
                released = expire_pending(session, SYSTEM)
                prune_history(session)
            if released:
                log.info("released %d expired pending allocation(s)", released)
        except DatabaseUnavailable as exc:  # an outage: say so once per sweep, no traceback
            log.warning("expiry sweep skipped: the database is unavailable (%s)", exc.detail)
        except Exception:  # keep sweeping: a passing database error must not stop it
            log.exception("expiry sweep failed")


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        app = self._factory()
        # The modules and the app built here live as long as the worker: move them out of the
        # cyclic collector's reach, or each full collection walks all of them with the GIL held
        # (a 40-60 ms pause of every request in the webhook worker).
        gc.freeze()
        return app


def gunicorn_options(settings: Settings, bind: str) -> dict[str, Any]:
    return {
        "bind": [bind],
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 75,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "control_socket_disable": True,
        "proc_name": "macpool",
        "child_exit": _child_exit,
    }


def run_gunicorn(app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
    app = _Gunicorn(app_factory, {k: v for k, v in options.items() if _known(k)})
    app.run()


def _known(key: str) -> bool:
    from gunicorn.config import Config

    return key in Config().settings


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
    dies (after a pause, so a crash loop does not spin)."""

    RESTART_DELAY = 5.0

    def __init__(self, targets: list[tuple[str, int]], stop: threading.Event) -> None:
        super().__init__(name="plugin-processes", daemon=True)
        self.targets = targets
        self.halt = stop
        self.running: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def _launch(self, target: tuple[str, int]) -> None:
        name, index = target
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.running[target] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "manager.plugin_process", name, str(index)], env=env
        )

    def run(self) -> None:
        for target in self.targets:
            self._launch(target)
        while not self.halt.wait(self.RESTART_DELAY):
            for target, proc in list(self.running.items()):
                if proc.poll() is not None:
                    log.warning(
                        "plugin process %s[%d] exited with %s; restarting", *target, proc.returncode
                    )
                    self._launch(target)

    def stop(self) -> None:
        self.halt.set()
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


__all__ = ["PASSWORD_FILE", "gunicorn_options", "prepare", "run_gunicorn", "serve"]
