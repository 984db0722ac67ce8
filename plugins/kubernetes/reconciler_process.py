"""The reconciler as a process: its Kubernetes API client and its entry point, :func:`run`.

``macpool serve`` starts :func:`run` (see :meth:`plugins.kubernetes.KubernetesPlugin.processes`)
with the spawn method, so it stays a module-level function that survives pickling.
"""

from __future__ import annotations

import signal
import threading

from kubernetes import config as kube_config
from kubernetes.client import ApiClient

from manager.config import Settings
from manager.services import Database


def load_api_client() -> ApiClient:
    """In-cluster configuration when running in a pod, else ``KUBECONFIG`` / ~/.kube/config."""
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


def run(
    settings: Settings, *, stop: threading.Event | None = None, api_client: ApiClient | None = None
) -> None:
    """Run the reconciler until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
    # Imported here: plugins.kubernetes.reconciler re-exports this module's names.
    from plugins.kubernetes.reconciler import Reconciler

    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
    database = Database.from_settings(settings)
    try:
        Reconciler(database, settings, api_client or load_api_client(), freeze=True).run(stop)
    finally:
        database.dispose()


__all__ = ["load_api_client", "run"]
