"""The webhook certificate lifecycle: which files the listener serves, and keeping them fresh.

- ``MACPOOL_WEBHOOK_CERT``/``MACPOOL_WEBHOOK_KEY`` set: externally managed files (cert-manager,
  a mounted Secret); MacPool only serves them, reloading when they change.
- Unset: MacPool's own CA and serving certificate in ``<data dir>/webhook-tls``, created on first
  start and rotated before expiry. In a cluster (a :class:`ClusterCertificates` is given) the set
  is shared by every replica through two Secrets in MacPool's namespace, and the CA bundle is
  injected into the MutatingWebhookConfiguration's ``caBundle``.

Rotation order keeps every review verifiable: Secrets first, then ``caBundle`` (old and new CA),
then the serving files the listener reloads.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from manager.config import ConfigError, Settings
from plugins.kubernetes.calls import REQUEST_TIMEOUT
from plugins.kubernetes.certificates import (
    WebhookCertificates,
    create_certificates,
    rotate_certificates,
)
from plugins.kubernetes.certstore import (
    TLS_CERT,
    TLS_KEY,
    ca_secret,
    certificates_from_secrets,
    load_certificates,
    save_certificates,
    serving_secret,
)
from plugins.kubernetes.manifests import APP, WEBHOOK_CONFIGURATION
from plugins.kubernetes.settings import KubernetesSettings

log = logging.getLogger("macpool.webhook.certificates")

TLS_DIRECTORY: Final = "webhook-tls"
CA_SECRET: Final = "macpool-webhook-ca"  # noqa: S105 - a Secret name
SERVING_SECRET: Final = "macpool-webhook-tls"  # noqa: S105 - a Secret name
#: How often the rotation thread looks at the certificates (seconds).
ROTATION_CHECK: Final = 3600.0
_LABELS: Final = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "webhook-tls"}


@dataclass(frozen=True)
class ServingFiles:
    """The pair the listener serves; ``managed`` when MacPool issues and rotates it."""

    cert: Path
    key: Path
    managed: bool


def webhook_identity(settings: Settings, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(Service name, namespace) the serving certificate is issued for.

    The namespace is the pod's own (``POD_NAMESPACE``, set by the rendered Deployment) when
    known, so the certificate matches wherever the manifests were applied.
    """
    env = os.environ if environ is None else environ
    k8s = KubernetesSettings.of(settings)
    return k8s.webhook_service, env.get("POD_NAMESPACE") or k8s.k8s_namespace


class ClusterCertificates:
    """The certificate Secrets and the ``caBundle`` injection, through the kubernetes client."""

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str,
        webhook_configuration: str = WEBHOOK_CONFIGURATION,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self._secret_model = client.V1Secret
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.namespace = namespace
        self.webhook_configuration = webhook_configuration

    def load(self) -> WebhookCertificates | None:
        """The set stored in the Secrets, or ``None`` when they do not exist yet."""
        from kubernetes.client.exceptions import ApiException

        try:
            ca = self.core.read_namespaced_secret(
                CA_SECRET, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            serving = self.core.read_namespaced_secret(
                SERVING_SECRET, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return certificates_from_secrets({"data": ca.data or {}}, {"data": serving.data or {}})

    def store(self, certificates: WebhookCertificates, *, create: bool) -> bool:
        """Write both Secrets; with ``create``, False when another replica created them first."""
        from kubernetes.client.exceptions import ApiException

        bodies = (
            ca_secret(certificates, name=CA_SECRET, namespace=self.namespace, labels=_LABELS),
            serving_secret(
                certificates, name=SERVING_SECRET, namespace=self.namespace, labels=_LABELS
            ),
        )
        for document in bodies:
            name = document["metadata"]["name"]
            body = self._secret_model.from_dict(document)
            assert body is not None  # from_dict returns None only for None
            if not create:
                self.core.replace_namespaced_secret(
                    name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
                continue
            try:
                self.core.create_namespaced_secret(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                return False
        return True

    def inject_ca_bundle(self, certificates: WebhookCertificates) -> int:
        """Set ``caBundle`` on every webhook of the configuration; returns how many changed."""
        configuration = self.admission.read_mutating_webhook_configuration(
            self.webhook_configuration, _request_timeout=REQUEST_TIMEOUT
        )
        bundle = base64.b64encode(certificates.ca_bundle_pem).decode("ascii")
        operations = []
        for index, webhook in enumerate(configuration.webhooks or []):
            current = webhook.client_config.ca_bundle if webhook.client_config else None
            if isinstance(current, bytes):
                current = current.decode("ascii")
            if current != bundle:
                path = f"/webhooks/{index}/clientConfig/caBundle"
                operations.append({"op": "add", "path": path, "value": bundle})
        if operations:
            self.admission.patch_mutating_webhook_configuration(
                self.webhook_configuration, operations, _request_timeout=REQUEST_TIMEOUT
            )
        return len(operations)


def serving_files(
    settings: Settings,
    *,
    cluster: ClusterCertificates | None = None,
    now: datetime | None = None,
    environ: dict[str, str] | None = None,
) -> ServingFiles:
    """Make sure the serving pair exists (and is fresh when managed); return its paths."""
    k8s = KubernetesSettings.of(settings)
    if k8s.webhook_cert or k8s.webhook_key:
        return _external_files(settings)
    directory = settings.data_dir / TLS_DIRECTORY
    refresh_certificates(settings, cluster=cluster, now=now, environ=environ)
    return ServingFiles(directory / TLS_CERT, directory / TLS_KEY, managed=True)


def refresh_certificates(
    settings: Settings,
    *,
    cluster: ClusterCertificates | None = None,
    now: datetime | None = None,
    environ: dict[str, str] | None = None,
) -> WebhookCertificates:
    """Create or rotate MacPool's own certificates; store, inject and save what changed."""
    service, namespace = webhook_identity(settings, environ)
    directory = settings.data_dir / TLS_DIRECTORY
    local = load_certificates(directory)
    shared = cluster.load() if cluster is not None else None
    current = shared or local
    if current is None:
        wanted = create_certificates(service=service, namespace=namespace, now=now)
    else:
        wanted = rotate_certificates(current, service=service, namespace=namespace, now=now)
    if cluster is not None:
        if (shared is None or wanted is not shared) and not cluster.store(
            wanted, create=shared is None
        ):
            # Another replica created the Secrets between our read and our create: use theirs.
            wanted = cluster.load() or wanted
        # Always: the configuration may have been re-applied without its caBundle.
        cluster.inject_ca_bundle(wanted)
    if wanted is not local:
        save_certificates(directory, wanted)
        log.info("webhook serving certificate written to %s", directory)
    return wanted


def _external_files(settings: Settings) -> ServingFiles:
    k8s = KubernetesSettings.of(settings)
    if not (k8s.webhook_cert and k8s.webhook_key):
        raise ConfigError("Set both MACPOOL_WEBHOOK_CERT and MACPOOL_WEBHOOK_KEY, or neither.")
    cert, key = Path(k8s.webhook_cert), Path(k8s.webhook_key)
    for name, path in (("MACPOOL_WEBHOOK_CERT", cert), ("MACPOOL_WEBHOOK_KEY", key)):
        if not path.is_file():
            raise ConfigError(f"{name}='{path}' is not a readable file.")
    return ServingFiles(cert, key, managed=False)


def start_rotation(
    settings: Settings,
    *,
    cluster: ClusterCertificates | None,
    stop: threading.Event,
    interval: float = ROTATION_CHECK,
) -> threading.Thread:
    """A daemon thread that renews the managed certificates every ``interval`` seconds."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                refresh_certificates(settings, cluster=cluster)
            except Exception:  # keep trying: the current certificates stay valid for a day
                log.exception("webhook certificate rotation failed")

    thread = threading.Thread(target=loop, name="webhook-cert-rotation", daemon=True)
    thread.start()
    return thread


__all__ = [
    "CA_SECRET",
    "SERVING_SECRET",
    "TLS_DIRECTORY",
    "ClusterCertificates",
    "ServingFiles",
    "refresh_certificates",
    "serving_files",
    "start_rotation",
    "webhook_identity",
]
