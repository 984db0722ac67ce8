"""Configuration: defaults, TOML file, environment and overrides layered; bad values named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from manager.config import (
    ConfigError,
    PluginSettings,
    Settings,
    ensure_secret_key,
    load_settings,
    plugin_settings_types,
)


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "macpool.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_configuration() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.bind_host_port == ("127.0.0.1", 8080)
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("/.macpool/macpool.db")


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = _file(
        tmp_path,
        'bind = "0.0.0.0:9000"\nworkers = 4\nplugins = ["ovirt", "kubernetes"]\n'
        'low_threshold = 3\ndefault_range = "0a:00:00:00:00:00-0a:00:00:00:ff:ff"\n',
    )
    environ = {"MACPOOL_CONFIG": config, "MACPOOL_WORKERS": "6", "MACPOOL_DATA_DIR": "/srv/mp"}
    settings = load_settings(environ=environ)
    assert settings.bind == "0.0.0.0:9000"  # from the file
    assert settings.workers == 6  # the environment wins over the file
    assert settings.plugins == ("ovirt", "kubernetes")
    assert settings.low_threshold == 3
    assert settings.data_dir == Path("/srv/mp")
    assert settings.effective_database_url == "sqlite:////srv/mp/macpool.db"
    assert load_settings({"workers": 1}, environ=environ).workers == 1  # overrides win


def test_environment_forms() -> None:
    settings = load_settings(
        environ={
            "MACPOOL_PLUGINS": " OVIRT , kubernetes ,",
            "MACPOOL_BIND": "[::1]:8081",
            "MACPOOL_DATABASE_URL": "postgresql://u@h/db",
            "MACPOOL_EXPIRE_INTERVAL": "2.5",
            "MACPOOL_WORKERS": "",  # empty means unset
        }
    )
    assert settings.plugins == ("ovirt", "kubernetes")
    assert settings.bind_host_port == ("::1", 8081)
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.expire_interval == 2.5
    assert settings.workers == Settings().workers
    assert load_settings(environ={"MACPOOL_PLUGINS": ""}).plugins == ()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MACPOOL_BIND": "localhost"}, "MACPOOL_BIND='localhost'"),
        ({"MACPOOL_BIND": "host:99999"}, "MACPOOL_BIND='host:99999'"),
        ({"MACPOOL_WEBHOOK_BIND": ":x"}, "MACPOOL_WEBHOOK_BIND"),
        ({"MACPOOL_WORKERS": "two"}, "MACPOOL_WORKERS='two'"),
        ({"MACPOOL_WORKERS": "0"}, "MACPOOL_WORKERS"),
        ({"MACPOOL_LOW_THRESHOLD": "-1"}, "MACPOOL_LOW_THRESHOLD"),
        ({"MACPOOL_EXPIRE_INTERVAL": "soon"}, "MACPOOL_EXPIRE_INTERVAL='soon'"),
        ({"MACPOOL_DEFAULT_RANGE": "02:00:00:00:00:09-02:00:00:00:00:01"}, "MACPOOL_DEFAULT_RANGE"),
        ({"MACPOOL_DEFAULT_RANGE": "nonsense"}, "nonsense"),
        ({"MACPOOL_DATABASE_URL": "mysql://db"}, "MACPOOL_DATABASE_URL"),
        ({"MACPOOL_K8S_CLUSTER_SCOPE": "kubernetes"}, "MACPOOL_K8S_CLUSTER_SCOPE"),
        ({"MACPOOL_K8S_RECONCILE": "maybe"}, "MACPOOL_K8S_RECONCILE"),
        ({"MACPOOL_K8S_CERT_CHECK_INTERVAL": "0"}, "MACPOOL_K8S_CERT_CHECK_INTERVAL"),
    ],
)
def test_bad_environment_value_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert named in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("colour = 'blue'\n", "unknown setting 'colour'"),
        ("workers = 'lots'\n", ": workers='lots' is not a whole number"),
        ("bind = 'nowhere'\n", "nowhere"),
        ("this is not toml\n", "cannot be read"),
    ],
)
def test_bad_file_value_is_named(tmp_path: Path, text: str, named: str) -> None:
    config = _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MACPOOL_CONFIG": config})
    assert named in caught.value.message


def test_missing_file_and_unknown_override(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_settings(environ={"MACPOOL_CONFIG": missing})
    with pytest.raises(ConfigError, match="'colour'"):
        load_settings({"colour": "blue"}, environ={})


def test_secret_key_generated_once_private(tmp_path: Path) -> None:
    settings = load_settings(environ={"MACPOOL_DATA_DIR": str(tmp_path / "d")})
    first = ensure_secret_key(settings)
    second = ensure_secret_key(settings)
    assert first.secret_key and first.secret_key == second.secret_key
    assert ((tmp_path / "d" / "secret-key").stat().st_mode & 0o777) == 0o600
    given = load_settings(environ={"MACPOOL_SECRET_KEY": "k" * 40})
    assert ensure_secret_key(given).secret_key == "k" * 40


def test_a_boolean_is_not_a_number(tmp_path: Path) -> None:
    config = tmp_path / "macpool.toml"
    config.write_text("workers = true\n")
    with pytest.raises(ConfigError, match="workers=true is not a int value"):
        load_settings(environ={"MACPOOL_CONFIG": str(config)})


@dataclass(frozen=True)
class _Clashing(PluginSettings):
    plugin = "clashing"
    workers: int = 1


def test_a_plugin_may_not_declare_a_core_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("manager.config.plugin_settings_types", lambda: (_Clashing,))
    with pytest.raises(ConfigError, match="Plugin 'clashing' declares setting 'workers' again"):
        load_settings(environ={})


def test_the_installed_plugins_declare_their_settings() -> None:
    names = {kind.plugin for kind in plugin_settings_types()}
    assert {"kubernetes", "ovirt"} <= names
    assert load_settings(environ={}) == Settings()  # nothing given: no plugin settings kept
