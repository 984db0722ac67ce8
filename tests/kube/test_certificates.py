"""MacPool's own webhook certificates rotated under load, through the real API server.

The Secrets are seeded with a CA that falls due for rotation (a day before expiry) a few seconds
after MacPool starts. MacPool then writes the new CA into the Secrets, adds it to the real
MutatingWebhookConfiguration's ``caBundle`` (the old CA stays: overlap), and only then serves
a certificate from it; VM creates issued all along must all succeed.

The managed certificate names the Service, not an IP address, so here the Service name is
``localhost`` and the webhook URL ``https://localhost:PORT/...`` (the rest as rendered).
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from plugins.kubernetes.certificates import create_certificates, load_pem_certificates
from plugins.kubernetes.certsetup import CA_SECRET, SERVING_SECRET
from plugins.kubernetes.certstore import ca_secret, serving_secret
from tests.kube.conftest import Cluster
from tests.kube.macpool import NAMESPACE, render, wait_for, webhook_configuration_for
from tests.kube.objects import vm, vm_macs

pytestmark = pytest.mark.kube

DUE_IN = 25  # seconds until the seeded CA is within a day of its expiry


def _bundle(admission: client.AdmissionregistrationV1Api, name: str) -> list[x509.Certificate]:
    configuration = admission.read_mutating_webhook_configuration(name)
    bundles = {w.client_config.ca_bundle or "" for w in configuration.webhooks}
    assert len(bundles) == 1, "every webhook carries the same caBundle"
    (bundle,) = bundles
    return load_pem_certificates(base64.b64decode(bundle)) if bundle else []


def test_rotation_updates_the_real_ca_bundle_while_creates_succeed(
    cluster: Cluster, admin_api: client.ApiClient, macpool_factory: Any
) -> None:
    core = client.CoreV1Api(admin_api)
    admission = client.AdmissionregistrationV1Api(admin_api)
    seeded = create_certificates(
        service="localhost", namespace=NAMESPACE, ca_valid_for=timedelta(days=1, seconds=DUE_IN)
    )
    labels: dict[str, str] = {}
    for body in (
        ca_secret(seeded, name=CA_SECRET, namespace=NAMESPACE, labels=labels),
        serving_secret(seeded, name=SERVING_SECRET, namespace=NAMESPACE, labels=labels),
    ):
        core.create_namespaced_secret(NAMESPACE, body)
    macpool = macpool_factory(
        extra_env={
            "MACPOOL_WEBHOOK_CERT": "",
            "MACPOOL_WEBHOOK_KEY": "",
            "MACPOOL_WEBHOOK_SERVICE": "localhost",
            "MACPOOL_K8S_CERT_CHECK_INTERVAL": "2",
        }
    )
    # Rendered without --ca-bundle: MacPool injects its CA itself.
    configuration = webhook_configuration_for(render(), macpool.webhook_port)
    for webhook in configuration["webhooks"]:
        url = webhook["clientConfig"]["url"]
        webhook["clientConfig"]["url"] = url.replace("https://127.0.0.1:", "https://localhost:")
    name = configuration["metadata"]["name"]
    macpool.deployment.unregister_webhook()
    admission.create_mutating_webhook_configuration(configuration)
    try:
        macpool.start().wait_ready()
        assert _bundle(admission, name)[0] == seeded.ca.certificate  # injected at start
        created: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def keep_creating() -> None:
            while not stop.is_set():
                index = len(created) + len(failures)
                try:
                    obj = cluster.create_vm(vm(f"vm-{index}", cluster.namespace))
                except ApiException as exc:
                    failures.append(str(exc.body))
                else:
                    (created if len(vm_macs(obj)) == 2 else failures).append(str(index))
                time.sleep(0.2)

        creator = threading.Thread(target=keep_creating, daemon=True)
        creator.start()
        try:
            bundle = wait_for(
                lambda: (b := _bundle(admission, name)) and len(b) == 2 and b,
                timeout=DUE_IN + 30,
                what="the new CA in caBundle",
            )
            new_ca, old_ca = bundle
            assert old_ca == seeded.ca.certificate and new_ca != old_ca
            # The listener reloads the rotated files: it now serves a certificate of the new CA.
            wait_for(
                lambda: _served_by(macpool.webhook_port, new_ca),
                timeout=30,
                what="the new serving certificate",
            )
            served_at = len(created)
            wait_for(lambda: len(created) >= served_at + 5, what="creates after the swap")
        finally:
            stop.set()
            creator.join(timeout=30)
        assert failures == []
        secret = core.read_namespaced_secret(CA_SECRET, NAMESPACE)
        stored = load_pem_certificates(base64.b64decode(secret.data["ca.crt"]))
        assert stored[0] == new_ca  # the Secrets carry the new CA (other replicas follow)
    finally:
        for secret_name in (CA_SECRET, SERVING_SECRET):
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(secret_name, NAMESPACE)


def _served_by(port: int, ca: x509.Certificate) -> bool:
    """Whether the served certificate verifies against ``ca`` alone."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    served = x509.load_pem_x509_certificate(pem.encode())
    try:
        served.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
