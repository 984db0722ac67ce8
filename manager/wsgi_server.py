"""The production WSGI server (gunicorn) every MacPool listener runs on: the UI and API of
``macpool serve`` and the plugins' own listeners (the Kubernetes webhook)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from manager.config import Settings
from manager.core.collector import freeze_survivors


def _child_exit(_server: Any, worker: Any) -> None:
    """Let the metrics of a finished worker stop counting as live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


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
        freeze_survivors()
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


__all__ = ["gunicorn_options", "run_gunicorn"]
