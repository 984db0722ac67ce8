"""The webhook WSGI application in-process: failures that need a broken database to show."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest
from werkzeug.test import Client

from manager.db import Base, Database
from plugins.kubernetes.admission import VM_CREATE_PREFIX
from plugins.kubernetes.metrics import AdmissionMetrics
from plugins.kubernetes.server import WebhookApp
from tests.plugins.kubernetes.conftest import POD_GVK, VM_GVK, review_body
from tests.plugins.kubernetes.test_admission_vm import POD_NET, vm
from tests.plugins.kubernetes.webhook_harness import free_port


def _client(tmp_path: Path) -> tuple[Client, AdmissionMetrics]:
    # A database file without the schema: any query fails.
    metrics = AdmissionMetrics()
    app = WebhookApp(
        Database(f"sqlite:///{tmp_path / 'empty.db'}"),
        cluster_scope="/kubernetes",
        wait_time=300,
        metrics=metrics,
    )
    return Client(app), metrics


def test_database_failure_is_a_500_and_counted(tmp_path: Path) -> None:
    client, metrics = _client(tmp_path)
    body = review_body(vm([{"name": "default", "masquerade": {}}], [POD_NET]), gvk=VM_GVK)
    reply = client.post("/mutate-virtualmachines", data=body)
    assert reply.status_code == 500
    assert json.loads(reply.get_data()) == {"error": "internal error; see the MacPool log"}
    samples = {
        (sample.labels["resource"], sample.labels["result"]): sample.value
        for sample in metrics.admissions.collect()[0].samples
        if sample.name.endswith("_total")
    }
    assert samples == {("virtualmachines", "error"): 1.0}


def test_unreachable_database_is_a_503_refusal(tmp_path: Path) -> None:
    """Nothing listens on the port: the review is refused, saying why, not failed with a 500."""
    port = free_port()
    database = Database(f"postgresql+psycopg://macpool@127.0.0.1:{port}/macpool")
    metrics = AdmissionMetrics()
    client = Client(
        WebhookApp(database, cluster_scope="/kubernetes", wait_time=300, metrics=metrics)
    )
    body = review_body(vm([{"name": "default", "masquerade": {}}], [POD_NET]), gvk=VM_GVK)
    reply = client.post("/mutate-virtualmachines", data=body)
    assert reply.status_code == 200
    response = json.loads(reply.get_data())["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    assert response["status"]["message"].startswith(VM_CREATE_PREFIX)
    assert "MacPool cannot reach its database" in response["status"]["message"]


def test_pod_without_networks_never_touches_the_database(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    reply = client.post("/mutate-pods", data=review_body(pod, gvk=POD_GVK))
    assert reply.status_code == 200
    assert json.loads(reply.get_data())["response"]["allowed"] is True
    assert not (tmp_path / "empty.db.write-lock").exists()


def test_main_app_registry_reads_no_webhook_files_until_they_exist(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(database.engine)
    registry = AdmissionMetrics.shared_registry(
        database, cluster_scope="/kubernetes", directory=tmp_path / "missing"
    )
    text = generate_latest(registry).decode()
    assert "kubevirt_kmp_duplicate_macs 0.0" in text
    assert "macpool_webhook_admissions" not in text


def test_review_without_a_namespace_is_malformed(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    del obj["metadata"]["namespace"]
    body = json.loads(review_body(obj, gvk=VM_GVK))
    body["request"]["namespace"] = ""
    reply = client.post("/mutate-virtualmachines", data=json.dumps(body))
    assert reply.status_code == 400
    assert "namespace" in json.loads(reply.get_data())["error"]


def test_write_transactions_are_counted_by_their_number_of_reviews(tmp_path: Path) -> None:
    from manager.services import bootstrap
    from tests.conftest import DEFAULT_RANGE

    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as session:
        bootstrap(session, default_range=DEFAULT_RANGE)
    metrics = AdmissionMetrics()
    client = Client(
        WebhookApp(database, cluster_scope="/kubernetes", wait_time=300, metrics=metrics)
    )
    for name in ("a", "b"):
        obj = vm([{"name": "default", "masquerade": {}}], [POD_NET], name=name)
        assert (
            client.post("/mutate-virtualmachines", data=review_body(obj, gvk=VM_GVK)).status_code
            == 200
        )
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    client.post("/mutate-pods", data=review_body(pod, gvk=POD_GVK))  # no transaction at all
    samples = {
        sample.name: sample.value
        for sample in metrics.batches.collect()[0].samples
        if sample.name.endswith(("_count", "_sum"))
    }
    assert samples == {
        "macpool_webhook_transaction_reviews_count": 2.0,
        "macpool_webhook_transaction_reviews_sum": 2.0,
    }
    text = generate_latest(metrics.registry(None, cluster_scope="/kubernetes")).decode()
    assert 'macpool_webhook_transaction_reviews_bucket{le="1.0"} 2.0' in text
    assert 'macpool_webhook_review_paths_total{path="transaction"} 2.0' in text
    assert 'macpool_webhook_review_paths_total{path="no_database"} 1.0' in text
    database.dispose()
