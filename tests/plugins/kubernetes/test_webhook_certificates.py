"""Certificate lifecycle of the webhook: managed files, rotation, Secrets and caBundle injection
through the kubernetes client (against a small stdlib stand-in), and reloading under load."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from kubernetes import client as k8s

from manager.config import load_settings
from plugins.kubernetes.certificates import create_certificates, load_pem_certificates
from plugins.kubernetes.certsetup import (
    CA_SECRET,
    SERVING_SECRET,
    ClusterCertificates,
    refresh_certificates,
    serving_files,
)
from plugins.kubernetes.certstore import CA_BUNDLE, TLS_CERT, load_certificates, save_certificates
from plugins.kubernetes.manifests import WEBHOOK_CONFIGURATION
from tests.plugins.kubernetes.webhook_harness import running_webhook

NAMESPACE = "macpool-system"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
CONFIGURATION = (
    f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"
)


class ApiStandIn:
    """Secrets of one namespace and one MutatingWebhookConfiguration, as the API server keeps them."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.configuration: dict[str, Any] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": [
                _webhook("mutatepods.kubemacpool.io", "/mutate-pods"),
                _webhook("mutatevirtualmachines.kubemacpool.io", "/mutate-virtualmachines"),
            ],
        }
        self.calls: list[str] = []
        #: Names whose next create answers 409 (another replica was faster).
        self.conflict_on_create: set[str] = set()
        self.lock = threading.Lock()

    def bundle_pems(self) -> set[str]:
        return {w["clientConfig"].get("caBundle", "") for w in self.configuration["webhooks"]}


def _webhook(name: str, path: str) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": {
            "service": {"name": "macpool-webhook", "namespace": NAMESPACE, "path": path}
        },
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",
    }


def _handler(state: ApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

        def _status(self, code: int, reason: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "code": code,
                },
            )

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0]
            with state.lock:
                state.calls.append(f"{method} {path}")
                if path == CONFIGURATION and method == "GET":
                    return self._send(200, state.configuration)
                if path == CONFIGURATION and method == "PATCH":
                    assert self.headers["Content-Type"] == "application/json-patch+json"
                    state.configuration = jsonpatch.apply_patch(state.configuration, self._body())
                    return self._send(200, state.configuration)
                if path == SECRETS and method == "POST":
                    body = self._body()
                    name = body["metadata"]["name"]
                    if name in state.secrets or name in state.conflict_on_create:
                        state.conflict_on_create.discard(name)
                        return self._status(409, "AlreadyExists")
                    state.secrets[name] = body
                    return self._send(201, body)
                if path.startswith(SECRETS + "/"):
                    name = path.rsplit("/", 1)[1]
                    if method == "GET":
                        if name not in state.secrets:
                            return self._status(404, "NotFound")
                        return self._send(200, state.secrets[name])
                    if method == "PUT":
                        state.secrets[name] = self._body()
                        return self._send(200, state.secrets[name])
                return self._status(404, "NotFound")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


@pytest.fixture
def api() -> Iterator[tuple[ApiStandIn, ClusterCertificates]]:
    state = ApiStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    with k8s.ApiClient(configuration) as api_client:
        yield state, ClusterCertificates(api_client, namespace=NAMESPACE)
    server.shutdown()
    server.server_close()


def _settings(data_dir: Path) -> Any:
    return load_settings({"data_dir": str(data_dir), "k8s_namespace": NAMESPACE}, environ={})


def _secret_pem(state: ApiStandIn, name: str, key: str) -> bytes:
    return base64.b64decode(state.secrets[name]["data"][key])


def test_first_replica_stores_secrets_and_injects_the_bundle(
    api: tuple[ApiStandIn, ClusterCertificates], tmp_path: Path
) -> None:
    state, cluster = api
    files = serving_files(_settings(tmp_path), cluster=cluster, environ={})
    assert files.managed
    assert set(state.secrets) == {CA_SECRET, SERVING_SECRET}
    assert state.secrets[SERVING_SECRET]["type"] == "kubernetes.io/tls"
    bundle = _secret_pem(state, CA_SECRET, CA_BUNDLE)
    assert state.bundle_pems() == {base64.b64encode(bundle).decode()}
    assert files.cert.read_bytes() == _secret_pem(state, SERVING_SECRET, TLS_CERT)
    served = x509.load_pem_x509_certificate(files.cert.read_bytes())
    served.verify_directly_issued_by(load_pem_certificates(bundle)[0])


def test_second_replica_uses_the_stored_secrets(
    api: tuple[ApiStandIn, ClusterCertificates], tmp_path: Path
) -> None:
    state, cluster = api
    first = serving_files(_settings(tmp_path / "a"), cluster=cluster, environ={})
    state.calls.clear()
    second = serving_files(_settings(tmp_path / "b"), cluster=cluster, environ={})
    assert second.cert.read_bytes() == first.cert.read_bytes()
    assert not any(call.startswith(("POST", "PUT", "PATCH")) for call in state.calls)


def test_replica_losing_the_creation_race_adopts_the_winners_set(
    api: tuple[ApiStandIn, ClusterCertificates], tmp_path: Path
) -> None:
    state, cluster = api
    winner = create_certificates(service="macpool-webhook", namespace=NAMESPACE)
    # The winner's Secrets appear between our read (none) and our create (409).
    original_store = cluster.store

    def racing_store(certificates: Any, *, create: bool) -> bool:
        original_store(winner, create=True)
        return original_store(certificates, create=create)

    cluster.store = racing_store  # type: ignore[method-assign]
    files = serving_files(_settings(tmp_path), cluster=cluster, environ={})
    served = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert served == winner.serving.certificate
    assert state.bundle_pems() == {base64.b64encode(winner.ca_bundle_pem).decode()}


def test_rotation_replaces_secrets_and_keeps_the_old_ca_in_the_bundle(
    api: tuple[ApiStandIn, ClusterCertificates], tmp_path: Path
) -> None:
    state, cluster = api
    settings = _settings(tmp_path)
    first = refresh_certificates(settings, cluster=cluster, environ={})
    later = datetime.now(UTC) + timedelta(days=364, hours=12)  # within a day of the CA's expiry
    rotated = refresh_certificates(settings, cluster=cluster, now=later, environ={})
    assert rotated.ca.certificate != first.ca.certificate
    assert rotated.ca_bundle == (rotated.ca.certificate, first.ca.certificate)
    assert f"PUT {SECRETS}/{CA_SECRET}" in state.calls
    assert state.bundle_pems() == {base64.b64encode(rotated.ca_bundle_pem).decode()}
    on_disk = load_certificates(tmp_path / "webhook-tls")
    assert on_disk is not None and on_disk.serving.certificate == rotated.serving.certificate


def test_bundle_removed_by_a_reapply_is_injected_again(
    api: tuple[ApiStandIn, ClusterCertificates], tmp_path: Path
) -> None:
    state, cluster = api
    settings = _settings(tmp_path)
    refresh_certificates(settings, cluster=cluster, environ={})
    for webhook in state.configuration["webhooks"]:
        webhook["clientConfig"].pop("caBundle")
    refresh_certificates(settings, cluster=cluster, environ={})
    assert "" not in state.bundle_pems()


def test_local_rotation_without_a_cluster(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = refresh_certificates(settings, environ={})
    again = refresh_certificates(settings, environ={})
    assert again.serving.certificate == first.serving.certificate
    due = datetime.now(UTC) + timedelta(days=181, hours=12)  # within a day of serving expiry
    renewed = refresh_certificates(settings, now=due, environ={})
    assert renewed.serving.certificate != first.serving.certificate
    assert renewed.ca.certificate == first.ca.certificate
    stored = (tmp_path / "webhook-tls" / TLS_CERT).read_bytes()
    assert x509.load_pem_x509_certificate(stored) == renewed.serving.certificate


# --- the listener reloads changed files without dropping requests -----------------------------


def _context(*cas: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata="".join(ca.decode() for ca in cas))
    return context


def _healthz(connection: http.client.HTTPSConnection) -> int:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def test_external_files_are_reloaded_without_dropping_requests(tmp_path: Path) -> None:
    external = tmp_path / "external"
    old = create_certificates(service="localhost", namespace="macpool")
    new = create_certificates(service="localhost", namespace="macpool")
    save_certificates(external, old)
    with running_webhook(
        tmp_path / "data",
        ca=external / CA_BUNDLE,
        args=("--cert-check-interval", "0.2"),
        MACPOOL_WEBHOOK_CERT=str(external / "tls.crt"),
        MACPOOL_WEBHOOK_KEY=str(external / "tls.key"),
    ) as webhook:
        assert not (tmp_path / "data" / "webhook-tls").exists()  # nothing self-signed made
        port = int(webhook.url.rsplit(":", 1)[1])
        both = _context(old.ca_bundle_pem, new.ca_bundle_pem)
        failures: list[BaseException] = []
        answered = [0]
        stop = threading.Event()

        def hammer() -> None:
            # Fresh connections all along, trusting both CAs: none may fail during the swap.
            while not stop.is_set():
                try:
                    connection = http.client.HTTPSConnection(
                        "localhost", port, context=both, timeout=10
                    )
                    assert _healthz(connection) == 200
                    connection.close()
                    answered[0] += 1
                except BaseException as exc:  # collected and asserted below
                    failures.append(exc)

        kept = http.client.HTTPSConnection(
            "localhost", port, context=_context(old.ca_bundle_pem), timeout=10
        )
        assert _healthz(kept) == 200
        workers = [threading.Thread(target=hammer) for _ in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        save_certificates(external, new)
        deadline = time.monotonic() + 15
        switched = False
        while time.monotonic() < deadline and not switched:
            probe = http.client.HTTPSConnection(
                "localhost", port, context=_context(new.ca_bundle_pem), timeout=10
            )
            try:
                switched = _healthz(probe) == 200
            except ssl.SSLError:
                time.sleep(0.2)
            finally:
                probe.close()
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.join()
        assert switched, "new connections never got the new certificate"
        assert failures == []
        # A client that names no server (an IP address: no SNI) gets the new one too.
        by_address = _context(new.ca_bundle_pem)
        by_address.check_hostname = False
        plain = http.client.HTTPSConnection("127.0.0.1", port, context=by_address, timeout=10)
        assert _healthz(plain) == 200
        plain.close()
        assert answered[0] > 10
        # The connection opened before the swap carries on with the old certificate.
        assert _healthz(kept) == 200
        kept.close()
        with pytest.raises(ssl.SSLError):
            _healthz(
                http.client.HTTPSConnection(
                    "localhost", port, context=_context(old.ca_bundle_pem), timeout=10
                )
            )
