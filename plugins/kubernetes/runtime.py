"""What ``macpool serve`` runs for the Kubernetes plugin, and when.

The webhook listener always runs when the plugin is enabled; the reconciler runs when
``MACPOOL_K8S_RECONCILE`` is ``true``, or ``auto`` inside a cluster. When MacPool talks to a
cluster (in a pod, or outside one with the reconciler on and ``KUBECONFIG``) the managed
certificates are shared through Secrets and the CA is injected into the webhook configuration.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC

from sqlalchemy import select

from manager.config import Settings
from manager.services import ClusterState, Database
from plugins.kubernetes.certsetup import ClusterCertificates, serving_files, start_rotation
from plugins.kubernetes.health import reconciler_problem, webhook_problem
from plugins.kubernetes.server import CERT_CHECK_INTERVAL, run_webhook
from plugins.kubernetes.settings import KubernetesSettings

log = logging.getLogger("macpool.webhook")


def in_cluster(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in a Kubernetes pod (the in-cluster config is available)."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST"))


def reconcile_enabled(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """``MACPOOL_K8S_RECONCILE``: true, false, or auto (true inside a cluster)."""
    reconcile = KubernetesSettings.of(settings).k8s_reconcile
    if reconcile == "auto":
        return in_cluster(environ)
    return reconcile == "true"


def webhook_readiness(settings: Settings) -> tuple[bool, str]:
    """Ready when this process's webhook listener accepts connections and answers."""
    problem = webhook_problem(settings)
    if problem is not None:
        return False, problem
    return True, f"ok (listening on {KubernetesSettings.of(settings).webhook_bind})"


def readiness(settings: Settings, database: Database) -> tuple[bool, str]:
    """Ready once the reconciler finished its first sync of the cluster (or when it is off),
    unless this process's reconciler reported a condition that stops it (see health)."""
    if not reconcile_enabled(settings):
        return True, "ok (reconciler disabled)"
    problem = reconciler_problem(settings)
    if problem is not None:
        return False, f"reconciler cannot work: {problem}"
    with database.session() as session:
        synced = session.scalar(
            select(ClusterState.synced_at).where(
                ClusterState.scope_path == KubernetesSettings.of(settings).k8s_cluster_scope
            )
        )
    if synced is None:
        return False, "initial sync of the cluster not done yet"
    return True, f"ok (synced {synced.replace(tzinfo=synced.tzinfo or UTC).isoformat()})"


def _cluster_certificates(settings: Settings) -> ClusterCertificates | None:
    """Secrets and caBundle access for managed certificates when MacPool talks to a cluster:
    in a pod, or outside one with the reconciler on (``KUBECONFIG``)."""
    k8s = KubernetesSettings.of(settings)
    if k8s.webhook_cert or k8s.webhook_key:
        return None
    if not (in_cluster() or reconcile_enabled(settings)):
        return None
    from plugins.kubernetes.certsetup import webhook_identity
    from plugins.kubernetes.reconciler_process import load_api_client

    _, namespace = webhook_identity(settings)
    return ClusterCertificates(load_api_client(), namespace=namespace)


def run_webhook_process(settings: Settings, *, check_interval: float = CERT_CHECK_INTERVAL) -> None:
    """The webhook child process of ``macpool serve``: certificates, rotation, listener."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cluster = _cluster_certificates(settings)
    try:
        files = serving_files(settings, cluster=cluster)
    except Exception:
        if cluster is None:
            raise
        # Serve with local certificates rather than not at all; the rotation loop retries.
        log.exception("could not share the webhook certificates through Secrets")
        files = serving_files(settings)
    if files.managed:
        start_rotation(
            settings,
            cluster=cluster,
            stop=threading.Event(),
            interval=KubernetesSettings.of(settings).k8s_cert_check_interval,
        )
    log.info(
        "webhook certificate %s (%s)",
        files.cert,
        "managed by MacPool" if files.managed else "external",
    )
    run_webhook(settings, cert_path=files.cert, key_path=files.key, check_interval=check_interval)


__all__ = [
    "in_cluster",
    "readiness",
    "reconcile_enabled",
    "run_webhook_process",
    "webhook_readiness",
]
