"""The HTTPS admission webhook listener: a small WSGI application served by gunicorn.

Paths: ``POST /mutate-virtualmachines``, ``POST /mutate-pods``, ``POST /mutate-noop`` (answers
every well-formed review with "allowed", for benchmarks), ``GET /healthz`` and ``GET /metrics``.
A body that is not a well-formed AdmissionReview gets HTTP 400, one over 7 MiB gets 413 (not
read). Business refusals are HTTP 200 with ``allowed: false``, as the API server expects; so is
a review that cannot reach the database (``status.code`` 503, saying so).

TLS: gunicorn wraps each accepted connection with the context its ``ssl_context`` hook returns;
the hook hands out :class:`~plugins.kubernetes.certstore.CertificateFiles`' current context, so
rotated certificate files are used for new connections while established ones carry on.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from manager.config import Settings
from manager.core.errors import DatabaseUnavailable
from manager.services import Database
from manager.wsgi_server import gunicorn_options, run_gunicorn
from plugins.kubernetes.admission import outage_refusal, review_pod, review_virtual_machine
from plugins.kubernetes.broker import FORKLIFT_LABELS, MigrationLabels
from plugins.kubernetes.certstore import CertificateFiles
from plugins.kubernetes.group_commit import GroupCommit
from plugins.kubernetes.metrics import (
    CONTENT_TYPE,
    AdmissionMetrics,
    enable_multiprocess,
    exposition,
)
from plugins.kubernetes.reserve import ReservedMacs
from plugins.kubernetes.review import (
    MAX_REVIEW_BYTES,
    AdmissionRequest,
    AdmissionResult,
    MalformedReview,
    build_response,
    parse_review,
)
from plugins.kubernetes.service_broker import WEBHOOK_ACTOR
from plugins.kubernetes.settings import KubernetesSettings

log = logging.getLogger("macpool.webhook")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]

VM_PATH: Final = "/mutate-virtualmachines"
POD_PATH: Final = "/mutate-pods"
NOOP_PATH: Final = "/mutate-noop"
#: How often (seconds) each worker checks the certificate files for a change.
CERT_CHECK_INTERVAL: Final = 10.0
#: A too-large body up to this size is read and dropped before answering 413.
DRAIN_LIMIT: Final = 4 * MAX_REVIEW_BYTES

_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    411: "411 Length Required",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
}


class _TooLarge(Exception):
    """The body is larger than an AdmissionReview may be."""


class WebhookApp:
    """The WSGI application: routes reviews to the admission logic inside one transaction."""

    def __init__(
        self,
        database: Database,
        *,
        cluster_scope: str,
        wait_time: int,
        metrics: AdmissionMetrics | None = None,
        migration_labels: MigrationLabels = FORKLIFT_LABELS,
        reserve_ahead: bool = False,
    ) -> None:
        self.database = database
        self.migration_labels = migration_labels
        self.metrics = metrics or AdmissionMetrics()
        #: MACs reserved ahead answer VM CREATE reviews without a write (see reserve.py).
        self.reserved = (
            ReservedMacs(
                database, cluster_scope=cluster_scope, wait_time=wait_time, actor=WEBHOOK_ACTOR
            )
            if reserve_ahead
            else None
        )
        #: Reviews arriving together share a write transaction (see group_commit).
        self.group_commit = GroupCommit(
            database,
            cluster_scope=cluster_scope,
            wait_time=wait_time,
            on_batch=self.metrics.observe_batch,
            on_path=self.metrics.observe_path,
            before_batch=(
                None
                if self.reserved is None
                else functools.partial(self.reserved.record_now, take_turn=False)
            ),
        )
        self._registry = self.metrics.registry(database, cluster_scope=cluster_scope)
        self._reviewers: dict[str, Callable[[AdmissionRequest], AdmissionResult]] = {
            VM_PATH: self._review_vm,
            POD_PATH: self._review_pod,
            NOOP_PATH: lambda request: AdmissionResult.allow(),
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Route one request."""
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path in self._reviewers:
            if method != "POST":
                return _json(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            return self._admit(path, environ, start_response)
        if path == "/healthz":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/metrics" and method == "GET":
            body = exposition(self._registry)
            start_response(_STATUS[200], [("Content-Type", CONTENT_TYPE), _length(body)])
            return [body]
        return _json(start_response, 404, {"error": f"no such path: {path}"})

    def _admit(self, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        resource = path.removeprefix("/mutate-")
        started = time.perf_counter()
        try:
            request = parse_review(_read_body(environ))
            try:
                result = self._reviewers[path](request)
            except DatabaseUnavailable as exc:
                # A refusal the API server shows to the user, not a failure its failurePolicy
                # could turn into "admitted without a MAC".
                log.warning("review on %s: database unavailable: %s", path, exc.detail)
                result = outage_refusal(request, exc)
        except _TooLarge:
            self._count(resource, "too_large", started)
            message = f"The AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes."
            return _json(start_response, 413, {"error": message})
        except MalformedReview as exc:
            self._count(resource, "malformed", started)
            return _json(start_response, 400, {"error": exc.message})
        except Exception:
            # The API server applies the webhook's failurePolicy to a 500; log the cause here.
            log.exception("review on %s failed", path)
            self._count(resource, "error", started)
            return _json(start_response, 500, {"error": "internal error; see the MacPool log"})
        if not result.allowed:
            log.info(
                "refused %s %s/%s: %s", resource, request.namespace, request.name, result.message
            )
        outcome = "denied" if not result.allowed else "patched" if result.patch else "allowed"
        self._count(resource, outcome, started)
        return _json(start_response, 200, build_response(request, result))

    def _count(self, resource: str, result: str, started: float) -> None:
        self.metrics.observe(resource, result, time.perf_counter() - started)

    def _review_vm(self, request: AdmissionRequest) -> AdmissionResult:
        _require_namespace(request)
        # A VM CREATE or UPDATE reads what its owner holds first: it always needs the database
        # (its other operations answer without one, so they keep the first run without it).
        return self.group_commit.review(
            functools.partial(review_virtual_machine, labels=self.migration_labels),
            request,
            first_without_database=request.operation not in ("CREATE", "UPDATE"),
            fast=(
                self.reserved.broker
                if self.reserved is not None and request.operation == "CREATE"
                else None
            ),
        )

    def _review_pod(self, request: AdmissionRequest) -> AdmissionResult:
        _require_namespace(request)
        return self.group_commit.review(review_pod, request)


def _require_namespace(request: AdmissionRequest) -> None:
    """VMs and Pods are namespaced: a review of one without a namespace is malformed (its MACs
    would otherwise land in the cluster scope itself)."""
    metadata = (request.object or {}).get("metadata")
    from_object = metadata.get("namespace") if isinstance(metadata, dict) else None
    if request.object is not None and not (request.namespace or from_object):
        raise MalformedReview("request.namespace is empty; VMs and Pods are namespaced.")


def _read_body(environ: Environ) -> bytes:
    """The request body, refusing (unread) anything over the limit."""
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text.strip().isdigit():
        length = int(length_text)
        if length > MAX_REVIEW_BYTES:
            _discard(stream, length)
            raise _TooLarge
        return bytes(stream.read(length))
    # Chunked (no Content-Length): read one byte past the limit to know it was exceeded.
    body = bytes(stream.read(MAX_REVIEW_BYTES + 1))
    if len(body) > MAX_REVIEW_BYTES:
        raise _TooLarge
    return body


def _discard(stream: Any, length: int) -> None:
    """Read and drop a too-large body of moderate size, so a client that sends the whole body
    before reading sees our 413 instead of a reset connection (beyond ``DRAIN_LIMIT``: unread)."""
    if length > DRAIN_LIMIT:
        return
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            return
        remaining -= len(chunk)


def _length(body: bytes) -> tuple[str, str]:
    return ("Content-Length", str(len(body)))


def _json(
    start_response: StartResponse,
    code: int,
    document: dict[str, Any],
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json.dumps(document, separators=(",", ":")).encode()
    start_response(
        _STATUS[code], [("Content-Type", "application/json"), _length(body), *(headers or [])]
    )
    return [body]


# --- gunicorn ----------------------------------------------------------------------------------


class ReloadingTLS:
    """gunicorn's ``ssl_context`` hook: the current context of the certificate files.

    Each worker process builds its own :class:`CertificateFiles` on its first connection (the
    hook runs in the worker), then checks the files at most every ``check_interval`` seconds.
    """

    def __init__(self, cert_path: Path, key_path: Path, *, check_interval: float) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.check_interval = check_interval
        self._files: CertificateFiles | None = None

    def __call__(self, config: Any, default_factory: Callable[[], Any]) -> Any:
        """Return the SSLContext for the connection being accepted."""
        if self._files is None:
            self._files = CertificateFiles(
                self.cert_path, self.key_path, check_interval=self.check_interval
            )
        return self._files.context()


def webhook_options(
    settings: Settings,
    *,
    cert_path: Path,
    key_path: Path,
    check_interval: float = CERT_CHECK_INTERVAL,
) -> dict[str, Any]:
    """gunicorn settings of the webhook listener (TLS, no access log: one line per VM is noise)."""
    options = gunicorn_options(settings, KubernetesSettings.of(settings).webhook_bind)
    options.update(
        certfile=str(cert_path),
        keyfile=str(key_path),
        ssl_context=ReloadingTLS(cert_path, key_path, check_interval=check_interval),
        accesslog=None,
        proc_name="macpool-webhook",
        # The API server gives up after timeoutSeconds (≤ 30): a longer worker timeout is moot.
        timeout=30,
    )
    return options


def create_webhook_app(settings: Settings) -> WebhookApp:
    """The WSGI app for one worker process."""
    k8s = KubernetesSettings.of(settings)
    app = WebhookApp(
        Database.from_settings(settings),
        cluster_scope=k8s.k8s_cluster_scope,
        wait_time=k8s.k8s_wait_time,
        migration_labels=MigrationLabels.parse(k8s.k8s_migration_labels),
        reserve_ahead=k8s.k8s_reserve_ahead,
    )
    # Everything loaded so far (modules, mappers, compiled statements) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it while the
    # API server waits (~20 ms each, holding the GIL, showed as the tail of the latencies).
    gc.freeze()
    return app


def run_webhook(
    settings: Settings,
    *,
    cert_path: Path,
    key_path: Path,
    check_interval: float = CERT_CHECK_INTERVAL,
) -> None:
    """Serve the webhook over HTTPS until stopped (gunicorn's arbiter handles the signals)."""
    enable_multiprocess(settings.data_dir / "metrics" / "webhook")
    options = webhook_options(
        settings, cert_path=cert_path, key_path=key_path, check_interval=check_interval
    )
    log.info("webhook listening on https://%s", KubernetesSettings.of(settings).webhook_bind)
    run_gunicorn(lambda: create_webhook_app(settings), options)


__all__ = [
    "NOOP_PATH",
    "POD_PATH",
    "VM_PATH",
    "ReloadingTLS",
    "WebhookApp",
    "create_webhook_app",
    "run_webhook",
    "webhook_options",
]
