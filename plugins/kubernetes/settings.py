"""The Kubernetes plugin's settings: ``MACPOOL_WEBHOOK_*`` and ``MACPOOL_K8S_*``.

Read and validated at start with the core settings (see :class:`manager.config.PluginSettings`);
code reads them with ``KubernetesSettings.of(settings)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from manager.config import ConfigError, PluginSettings, parse_bind

NAME: Final = "kubernetes"
OPT_MODES: Final = ("opt-in", "opt-out")


@dataclass(frozen=True)
class KubernetesSettings(PluginSettings):
    plugin = NAME

    webhook_bind: str = "0.0.0.0:8443"
    webhook_cert: str = ""
    webhook_key: str = ""
    webhook_service: str = "macpool-webhook"
    k8s_cluster_scope: str = "/kubernetes"
    k8s_reconcile: str = "auto"
    k8s_wait_time: int = 300
    #: Seconds between checks of MacPool's own webhook certificates (rotated a day before expiry).
    k8s_cert_check_interval: float = 3600.0
    k8s_namespace: str = "macpool"
    k8s_vm_mode: str = "opt-out"
    k8s_pod_mode: str = "opt-in"
    #: Label keys of a migrated VM: the source VM's id, the plan, the migration (Forklift's).
    k8s_migration_labels: str = "vmID,plan,migration"
    #: Answer VM CREATE reviews from MACs each webhook process reserved ahead (recorded within
    #: ~0.1 s); false: every review writes its allocation before answering.
    k8s_reserve_ahead: bool = True

    def validated(self) -> KubernetesSettings:
        """Every value checked, the opt modes normalized; :class:`ConfigError` names a bad one."""
        parse_bind(self.webhook_bind, "MACPOOL_WEBHOOK_BIND")
        if self.k8s_wait_time < 1:
            raise ConfigError("MACPOOL_K8S_WAIT_TIME must be at least 1.")
        if self.k8s_cert_check_interval <= 0:
            raise ConfigError(
                "MACPOOL_K8S_CERT_CHECK_INTERVAL must be a positive number of seconds."
            )
        if not self.k8s_cluster_scope.startswith("/"):
            raise ConfigError("MACPOOL_K8S_CLUSTER_SCOPE must be a scope path such as /kubernetes.")
        keys = [key.strip() for key in self.k8s_migration_labels.split(",")]
        if len(keys) != 3 or not all(keys):
            raise ConfigError(
                "MACPOOL_K8S_MIGRATION_LABELS must be three label keys VMID,PLAN,MIGRATION, "
                "e.g. vmID,plan,migration."
            )
        if self.k8s_reconcile not in ("auto", "true", "false"):
            raise ConfigError("MACPOOL_K8S_RECONCILE must be true, false or auto.")
        modes = {}
        for name in ("k8s_vm_mode", "k8s_pod_mode"):
            mode = getattr(self, name).strip().lower()
            if mode not in OPT_MODES:
                raise ConfigError(
                    f"MACPOOL_{name.upper()}='{getattr(self, name)}' is not an opt mode: "
                    "use opt-in or opt-out."
                )
            modes[name] = mode
        return replace(self, **modes)


__all__ = ["NAME", "KubernetesSettings"]
