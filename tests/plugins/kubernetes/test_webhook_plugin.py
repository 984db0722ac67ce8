"""The plugin object (entry point, readiness, processes) and the ``macpool k8s`` commands."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from prometheus_client import CollectorRegistry

from manager.app import create_app
from manager.cli import main
from manager.config import load_settings
from manager.core.actor import Actor, Owner
from manager.db import ClusterState
from manager.plugins import available_plugins
from manager.services import allocate_mac, assign_pool, create_pool, create_scope
from manager.startup import prepare
from plugins.kubernetes import plugin
from plugins.kubernetes.certificates import create_certificates, dns_names
from plugins.kubernetes.certstore import save_certificates
from plugins.kubernetes.clusterstate import collision_report
from plugins.kubernetes.health import clear_problem, probe_address, report_problem
from plugins.kubernetes.metrics import CollisionCollector
from plugins.kubernetes.runtime import reconcile_enabled, run_webhook_process
from plugins.kubernetes.service_broker import namespace_scope
from tests.plugins.kubernetes.webhook_harness import running_webhook


def test_entry_point_names_the_plugin_object() -> None:
    assert available_plugins()["kubernetes"] is plugin
    assert plugin.name == "kubernetes"


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("true", {}, True),
        ("false", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False),
        ("auto", {}, False),
        ("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
    ],
)
def test_reconcile_setting(value: str, environ: dict[str, str], expected: bool) -> None:
    settings = load_settings({"k8s_reconcile": value}, environ={})
    assert reconcile_enabled(settings, environ) is expected


def test_processes_without_reconciler_is_the_webhook_only() -> None:
    settings = load_settings({"k8s_reconcile": "false"}, environ={})
    targets = plugin.processes(settings)
    assert len(targets) == 1
    target = targets[0]
    assert isinstance(target, partial) and target.func is run_webhook_process
    assert target.args == (settings,)


def test_processes_with_reconciler_add_its_run() -> None:
    import pickle

    from plugins.kubernetes.reconciler import run

    settings = load_settings({"k8s_reconcile": "true"}, environ={})
    targets = plugin.processes(settings)
    assert [t.func for t in targets if isinstance(t, partial)] == [run_webhook_process, run]
    # serve starts them with the spawn method: they must survive pickling.
    assert [pickle.loads(pickle.dumps(t)).func for t in targets] == [run_webhook_process, run]


def _app(tmp_path: Path, **overrides: str) -> Any:
    config = {"data_dir": str(tmp_path), "plugins": "kubernetes", **overrides}
    prepare(load_settings(config, environ={}), echo=lambda _line: None)
    return create_app(config)


@pytest.fixture
def webhook_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readiness tests of the reconciler: the webhook listener counts as accepting."""
    monkeypatch.setattr("plugins.kubernetes.runtime.webhook_problem", lambda _settings: None)


@pytest.mark.usefixtures("webhook_up")
def test_ready_when_the_reconciler_is_disabled(tmp_path: Path) -> None:
    reply = _app(tmp_path, k8s_reconcile="false").test_client().get("/readyz")
    assert reply.status_code == 200
    assert reply.get_json()["checks"]["kubernetes"].startswith("ok")


@pytest.mark.usefixtures("webhook_up")
def test_not_ready_until_the_cluster_is_synced(tmp_path: Path) -> None:
    app = _app(tmp_path, k8s_reconcile="true")
    client = app.test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 503
    assert "initial sync" in reply.get_json()["checks"]["kubernetes"]
    database = app.extensions["macpool"].database
    with database.session(write=True) as session:
        session.add(ClusterState(scope_path="/kubernetes", synced_at=datetime.now(UTC)))
    reply = client.get("/readyz")
    assert reply.status_code == 200
    assert reply.get_json()["checks"]["kubernetes"].startswith("ok (synced")


@pytest.mark.usefixtures("webhook_up")
def test_a_reported_reconciler_problem_is_the_readiness_reason_until_cleared(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path, k8s_reconcile="true")
    settings = app.extensions["macpool"].settings
    with app.extensions["macpool"].database.session(write=True) as session:
        session.add(ClusterState(scope_path="/kubernetes", synced_at=datetime.now(UTC)))
    client = app.test_client()
    report_problem(settings, "namespace 'macpool' does not exist")
    reply = client.get("/readyz")
    assert reply.status_code == 503  # even though a sync was recorded (by any replica)
    assert reply.get_json()["checks"]["kubernetes"] == (
        "reconciler cannot work: namespace 'macpool' does not exist"
    )
    clear_problem(settings)
    assert client.get("/readyz").status_code == 200


def test_not_ready_while_the_webhook_listener_does_not_serve(tmp_path: Path) -> None:
    """A closed port and a port that accepts TCP but never completes TLS are both not ready;
    the real listener on that port is."""
    with running_webhook(tmp_path / "webhook") as webhook:
        bind = webhook.env["MACPOOL_WEBHOOK_BIND"]
        app = _app(tmp_path / "app", k8s_reconcile="false", webhook_bind=bind)
        reply = app.test_client().get("/readyz")
        assert reply.status_code == 200
        assert reply.get_json()["checks"]["webhook"] == f"ok (listening on {bind})"
    reply = app.test_client().get("/readyz")
    assert reply.status_code == 503
    assert "does not accept connections" in reply.get_json()["checks"]["webhook"]
    host, port = probe_address(bind)
    with socket.socket() as silent:  # the arbiter has bound the port, no worker answers yet
        silent.bind((host, port))
        silent.listen()
        reply = app.test_client().get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["status"] == "unavailable"


def test_the_probe_reaches_wildcard_binds_through_loopback() -> None:
    assert probe_address("0.0.0.0:8443") == ("127.0.0.1", 8443)
    assert probe_address("[::]:8443") == ("::1", 8443)
    assert probe_address("10.1.2.3:9443") == ("10.1.2.3", 9443)


# --- macpool k8s manifests ------------------------------------------------------------------------


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_manifests_json_lists_every_object_with_the_chosen_modes() -> None:
    result = _invoke(
        ["k8s", "manifests", "--image", "quay.io/x/macpool:1", "--namespace", "mp",
         "--vm-mode", "opt-in", "--pod-mode", "opt-out", "--replicas", "3", "-o", "json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    kinds = [item["kind"] for item in document["items"]]
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "Deployment", "Service"):
        assert kind in kinds
    deployment = next(i for i in document["items"] if i["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["namespace"] == "mp"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/x/macpool:1"
    config = next(i for i in document["items"] if i["kind"] == "MutatingWebhookConfiguration")
    selectors = {w["name"]: w["namespaceSelector"] for w in config["webhooks"]}
    vm_expressions = selectors["mutatevirtualmachines.kubemacpool.io"]["matchExpressions"]
    assert {
        "key": "mutatevirtualmachines.kubemacpool.io",
        "operator": "In",
        "values": ["allocate"],
    } in vm_expressions
    assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])


def test_manifests_take_the_secrets_named_on_the_command_line() -> None:
    result = _invoke(
        ["k8s", "manifests", "--image", "img", "-o", "json",
         "--database-secret", "db", "--database-secret-key", "dsn",
         "--session-key-secret", "ui", "--session-key-secret-key", "signing"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    deployment = next(i for i in json.loads(result.output)["items"] if i["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MACPOOL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "dsn"}
    assert env["MACPOOL_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "ui",
        "key": "signing",
    }


def test_manifests_yaml_with_ca_bundle(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    bundle = create_certificates(
        service="macpool-webhook", namespace="macpool-system"
    ).ca_bundle_pem
    (tmp_path / "ca.pem").write_bytes(bundle)
    result = _invoke(
        ["k8s", "manifests", "--image", "img", "--ca-bundle", str(tmp_path / "ca.pem")]
    )
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    config = next(d for d in documents if d["kind"] == "MutatingWebhookConfiguration")
    assert {w["clientConfig"]["caBundle"] for w in config["webhooks"]} == {
        base64.b64encode(bundle).decode()
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--vm-mode", "sometimes"],
        ["--replicas", "0"],
        ["--timeout", "31"],
        ["--output", "xml"],
    ],
)
def test_manifests_refuse_bad_options(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["k8s", "manifests", "--image", "img", *args])
    assert result.exit_code == 2
    assert "Error" in result.output


def test_manifests_need_an_image() -> None:
    result = CliRunner().invoke(main, ["k8s", "manifests"])
    assert result.exit_code == 2 and "--image" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--namespace", "Bad_NS"], "namespace 'Bad_NS'"),
        (["--service", "x" * 64], "service"),
        (["--database-secret", ""], "Secret name ''"),
        (["--session-key-secret", "Bad_Name"], "Secret name 'Bad_Name'"),
        (["--session-key-secret-key", "a key"], "Secret key 'a key'"),
    ],
)
def test_manifests_refuse_names_kubernetes_would_refuse(args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, ["k8s", "manifests", "--image", "img", *args])
    assert result.exit_code == 2 and named in result.output, result.output
    assert "not valid in Kubernetes" in result.output


def test_manifests_refuse_a_relative_cluster_scope() -> None:
    result = CliRunner().invoke(
        main, ["k8s", "manifests", "--image", "img", "--cluster-scope", "kubernetes"]
    )
    assert result.exit_code == 2 and "--cluster-scope" in result.output


# --- macpool k8s certs ----------------------------------------------------------------------------


def test_certs_creates_then_keeps_the_managed_set(tmp_path: Path) -> None:
    env = {"MACPOOL_DATA_DIR": str(tmp_path), "MACPOOL_K8S_NAMESPACE": "mp"}
    first = json.loads(_invoke(["k8s", "certs", "--json"], env).output)
    assert first["managed"] is True
    assert first["dns_names"] == [
        "macpool-webhook",
        "macpool-webhook.mp",
        "macpool-webhook.mp.svc",
        "macpool-webhook.mp.svc.cluster.local",
    ]
    served = x509.load_pem_x509_certificate(Path(first["cert"]).read_bytes())
    assert dns_names(served) == first["dns_names"]
    second = json.loads(_invoke(["k8s", "certs", "--json"], env).output)
    assert second["cert"] == first["cert"] and second["ca_bundle"] == first["ca_bundle"]
    assert x509.load_pem_x509_certificate(Path(second["cert"]).read_bytes()) == served


def test_certs_with_external_files_only_reports_them(tmp_path: Path) -> None:
    certificates = create_certificates(service="x", namespace="y")
    save_certificates(tmp_path / "ext", certificates)
    env = {
        "MACPOOL_DATA_DIR": str(tmp_path / "data"),
        "MACPOOL_WEBHOOK_CERT": str(tmp_path / "ext" / "tls.crt"),
        "MACPOOL_WEBHOOK_KEY": str(tmp_path / "ext" / "tls.key"),
    }
    result = _invoke(["k8s", "certs"], env)
    assert result.exit_code == 0
    assert "external files" in result.output
    assert not (tmp_path / "data" / "webhook-tls").exists()


@pytest.mark.parametrize("which", ["MACPOOL_WEBHOOK_CERT", "MACPOOL_WEBHOOK_KEY"])
def test_certs_need_both_external_files(tmp_path: Path, which: str) -> None:
    save_certificates(tmp_path, create_certificates(service="x", namespace="y"))
    env = {"MACPOOL_DATA_DIR": str(tmp_path / "d"), which: str(tmp_path / "tls.crt")}
    result = CliRunner().invoke(main, ["k8s", "certs"], env=env)
    assert result.exit_code == 2
    assert "both MACPOOL_WEBHOOK_CERT and MACPOOL_WEBHOOK_KEY" in result.output


def test_certs_refuse_missing_external_files(tmp_path: Path) -> None:
    env = {
        "MACPOOL_DATA_DIR": str(tmp_path),
        "MACPOOL_WEBHOOK_CERT": str(tmp_path / "nope.crt"),
        "MACPOOL_WEBHOOK_KEY": str(tmp_path / "nope.key"),
    }
    result = CliRunner().invoke(main, ["k8s", "certs"], env=env)
    assert result.exit_code == 2 and "nope.crt" in result.output


# --- collision metrics ------------------------------------------------------------------------


def test_collision_metrics_count_macs_shared_by_the_cluster_scope_as_the_report_does(
    tmp_path: Path,
) -> None:
    settings = load_settings({"data_dir": str(tmp_path)}, environ={})
    database = prepare(settings, echo=lambda _line: None)
    actor = Actor("test")
    with database.session(write=True) as session:
        shared = create_pool(
            session, actor, name="shared", ranges=["0a:00:00:00:00:00-0a:00:00:00:00:ff"],
            allow_duplicates=True,
        )  # fmt: skip
        for namespace in ("a", "b"):
            scope = namespace_scope(
                session, actor, cluster_scope="/kubernetes", namespace=namespace
            )
            assign_pool(session, actor, scope, shared.id)
        outside = create_scope(session, actor, kind="datacenter", name="dc", parent="/")
        assign_pool(session, actor, outside, shared.id)
        mac = "0a:00:00:00:00:07"
        for scope_path, name in (
            ("/kubernetes/a", "x"),
            ("/kubernetes/b", "y"),
            ("/kubernetes/b", "z"),
        ):
            allocate_mac(
                session,
                actor,
                scope=scope_path,
                owner=Owner("vm", name),
                interface="default",
                mac=mac,
            )
        # Shared only outside the cluster: not a Kubernetes collision.
        for name in ("p", "q"):
            allocate_mac(
                session,
                actor,
                scope="/dc",
                owner=Owner("ovirt-vm", name),
                interface="nic1",
                mac="0a:00:00:00:00:08",
            )
        # Shared by a VM of the cluster and an oVirt VM outside it: a collision of the cluster,
        # as in the reconciler's collision report (MACs are unique system-wide).
        across = "0a:00:00:00:00:09"
        allocate_mac(
            session, actor, scope="/kubernetes/a", owner=Owner("vm", "w"), interface="default",
            mac=across,
        )  # fmt: skip
        allocate_mac(
            session, actor, scope="/dc", owner=Owner("ovirt-vm", "r"), interface="nic1", mac=across
        )
        allocate_mac(
            session, actor, scope="/kubernetes/a", owner=Owner("vm", "lonely"), interface="default"
        )
    registry = CollectorRegistry()
    registry.register(CollisionCollector(database, cluster_scope="/kubernetes"))
    assert registry.get_sample_value("kubevirt_kmp_duplicate_macs") == 3
    assert registry.get_sample_value("kmp_mac_collisions", {"mac": mac}) == 3
    assert registry.get_sample_value("kmp_mac_collisions", {"mac": across}) == 2
    assert registry.get_sample_value("kmp_mac_collisions", {"mac": "0a:00:00:00:00:08"}) is None
    with database.session() as session:
        report = collision_report(session, scope_path="/kubernetes")
    assert sorted(report.collisions) == [mac, across]
    assert report.duplicate_macs == registry.get_sample_value("kubevirt_kmp_duplicate_macs")


def test_the_webhook_runs_without_the_kubernetes_client_installed() -> None:
    # `make run` installs no extras: with MACPOOL_PLUGINS=kubernetes, `macpool serve` must still
    # start its webhook (local certificates), importing the client only where a cluster is used.
    program = (
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kubernetes' or name.startswith('kubernetes.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Missing())\n"
        "import plugins.kubernetes.runtime, plugins.kubernetes.server\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
