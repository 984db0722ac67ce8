"""The plugin's own settings: read with the core's (same sources, same messages), kept apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.config import ConfigError, Settings, load_settings
from plugins.kubernetes import plugin
from plugins.kubernetes.settings import KubernetesSettings


def test_opt_modes_are_validated_and_normalized() -> None:
    settings = load_settings(
        environ={"MACPOOL_K8S_VM_MODE": " Opt-In ", "MACPOOL_K8S_POD_MODE": "opt-out"}
    )
    k8s = KubernetesSettings.of(settings)
    assert (k8s.k8s_vm_mode, k8s.k8s_pod_mode) == ("opt-in", "opt-out")
    defaults = KubernetesSettings.of(Settings())
    assert (defaults.k8s_vm_mode, defaults.k8s_pod_mode) == ("opt-out", "opt-in")
    with pytest.raises(ConfigError, match="MACPOOL_K8S_POD_MODE='sometimes' is not an opt mode"):
        load_settings(environ={"MACPOOL_K8S_POD_MODE": "sometimes"})


def test_the_plugin_declares_its_settings_and_keeps_the_names_and_defaults() -> None:
    assert plugin.settings_type is KubernetesSettings
    defaults = KubernetesSettings.of(load_settings(environ={}))
    assert defaults == KubernetesSettings()
    assert (defaults.webhook_bind, defaults.k8s_wait_time, defaults.k8s_reserve_ahead) == (
        "0.0.0.0:8443",
        300,
        True,
    )
    assert not hasattr(Settings(), "k8s_wait_time")  # the core holds none of them


def test_file_environment_and_overrides_reach_the_plugin(tmp_path: Path) -> None:
    config = tmp_path / "macpool.toml"
    config.write_text('k8s_namespace = "from-file"\nk8s_wait_time = 60\nworkers = 3\n')
    environ = {"MACPOOL_CONFIG": str(config), "MACPOOL_K8S_RESERVE_AHEAD": "false"}
    settings = load_settings({"k8s_wait_time": "90"}, environ=environ)
    k8s = KubernetesSettings.of(settings)
    assert (k8s.k8s_namespace, k8s.k8s_wait_time, k8s.k8s_reserve_ahead) == (
        "from-file",
        90,
        False,
    )
    assert settings.workers == 3
    with pytest.raises(ConfigError, match="MACPOOL_K8S_WAIT_TIME='soon' is not a whole number"):
        load_settings(environ={"MACPOOL_K8S_WAIT_TIME": "soon"})


def test_within_changes_and_validates_the_plugin_settings_only() -> None:
    settings = Settings(workers=5)
    changed = KubernetesSettings.within(settings, k8s_namespace="mp", k8s_vm_mode="OPT-IN")
    assert changed.workers == 5
    assert KubernetesSettings.of(changed).k8s_namespace == "mp"
    assert KubernetesSettings.of(changed).k8s_vm_mode == "opt-in"
    assert KubernetesSettings.of(settings) == KubernetesSettings()
    with pytest.raises(ConfigError, match="MACPOOL_K8S_RECONCILE"):
        KubernetesSettings.within(settings, k8s_reconcile="maybe")
