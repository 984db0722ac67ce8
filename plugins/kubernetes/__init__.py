"""The Kubernetes plugin: a KubeMacPool-compatible admission webhook, its reconciler,
certificates and deployment manifests (see DESIGN §5).

The :data:`plugin` object is what the ``macpool.plugins`` entry point names.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import click
from flask import Flask, Response

from manager.config import Settings
from plugins.kubernetes.settings import NAME, KubernetesSettings


class KubernetesPlugin:
    """Joins MacPool through :mod:`manager.plugins`: readiness, metrics, commands, processes."""

    name = NAME
    settings_type = KubernetesSettings

    def init_app(self, app: Flask) -> None:
        """Add the readiness checks (webhook listener, reconciler) and ``/metrics`` (when no
        one else serves it)."""
        from manager.web import state
        from plugins.kubernetes.metrics import CONTENT_TYPE, AdmissionMetrics, exposition
        from plugins.kubernetes.runtime import readiness, webhook_readiness

        current = state(app)
        current.ready_checks["webhook"] = partial(webhook_readiness, current.settings)
        current.ready_checks[NAME] = partial(readiness, current.settings, current.database)
        scope = KubernetesSettings.of(current.settings).k8s_cluster_scope
        files = current.settings.data_dir / "metrics" / "webhook"
        # The main /metrics (the API's) exposes these collectors; serve our own only without it.
        current.metric_collectors.extend(
            AdmissionMetrics.shared_collectors(
                current.database, cluster_scope=scope, directory=files
            )
        )
        if any(rule.rule == "/metrics" for rule in app.url_map.iter_rules()):
            return
        registry = AdmissionMetrics.shared_registry(
            current.database, cluster_scope=scope, directory=files
        )

        def metrics() -> Response:
            """Prometheus metrics: collisions and the webhook's admission counters."""
            return Response(exposition(registry), content_type=CONTENT_TYPE)

        app.add_url_rule("/metrics", "kubernetes_metrics", metrics, methods=["GET"])

    def cli_commands(self) -> list[click.Command]:
        """``macpool k8s …``."""
        from plugins.kubernetes.cli import k8s

        return [k8s]

    def processes(self, settings: Settings) -> list[Callable[[], None]]:
        """The webhook listener, and the reconciler when it is enabled."""
        from plugins.kubernetes.runtime import reconcile_enabled, run_webhook_process

        targets: list[Callable[[], None]] = [partial(run_webhook_process, settings)]
        if reconcile_enabled(settings):
            from plugins.kubernetes.reconciler import run

            targets.append(partial(run, settings))
        return targets


plugin = KubernetesPlugin()

__all__ = ["NAME", "KubernetesPlugin", "plugin"]
