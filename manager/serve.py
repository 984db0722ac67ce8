"""``macpool serve``: migrate, bootstrap, then run gunicorn (and plugin processes)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from manager.config import Settings
from manager.core.actor import SYSTEM
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
    database = Database(settings.effective_database_url)
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


def _sweeper(settings: Settings, stop: threading.Event) -> None:
    """Release expired pending allocations and prune allocator history, periodically."""
    database = Database(settings.effective_database_url)
    while not stop.wait(settings.expire_interval):
        try:
            with database.session(write=True) as session:
                released = expire_pending(session, SYSTEM)
                prune_history(session)
            if released:
                log.info("released %d expired pending allocation(s)", released)
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
        return self._factory()


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
    stop = threading.Event()
    sweeper = threading.Thread(target=_sweeper, args=(settings, stop), daemon=True)
    sweeper.start()
    children = []
    for plugin in plugins:
        for target in plugin.processes(settings):
            proc = multiprocessing.get_context("spawn").Process(target=target, daemon=True)
            proc.start()
            children.append(proc)
    try:
        run_gunicorn(
            lambda: create_app(settings=settings), gunicorn_options(settings, bind or settings.bind)
        )
    finally:
        stop.set()
        for proc in children:
            proc.terminate()
            proc.join(timeout=5)


__all__ = ["PASSWORD_FILE", "gunicorn_options", "prepare", "run_gunicorn", "serve"]
