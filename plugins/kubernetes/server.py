"""The HTTPS admission webhook listener.

Paths: ``POST /mutate-virtualmachines``, ``POST /mutate-pods``, ``POST /mutate-noop`` (answers
every well-formed review with "allowed", for benchmarks), ``GET /healthz`` and ``GET /metrics``.
A body that is not a well-formed AdmissionReview gets HTTP 400, one over 7 MiB gets 413 (not
read). Business refusals are HTTP 200 with ``allowed: false``, as the API server expects; so is
a review that cannot reach the database (``status.code`` 503, saying so).

:class:`WebhookApp` holds the routes and the admission logic, independent of the server:
:meth:`~WebhookApp.prepare` reads a review, :meth:`~WebhookApp.quick` answers it where no
write transaction is needed (MACs reserved ahead, reviews that need no database), and
:meth:`~WebhookApp.transact` answers the rest in a write transaction shared with the reviews
arriving meanwhile (group commit). It is also a WSGI application (in-process tests and
benchmarks).

The listener serves :class:`AsgiWebhook`: gunicorn's arbiter with uvicorn workers
(:mod:`manager.asgi_server`). The event loop reads the requests and answers the quick ones
itself; the write path runs on a pool of threads, so the reviews that wait for the writer turn
wait there together and share its transactions. On PostgreSQL every review runs on the pool
(a read may wait for the server, and the loop must not).

TLS: :class:`RotatingTLS` is the server context; each handshake takes the context of the
certificate files as they are now (:class:`~plugins.kubernetes.certstore.CertificateFiles`),
so rotated files are used for new connections while established ones carry on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from manager.asgi_server import WORKER_CLASS
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
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VM_PATH: Final = "/mutate-virtualmachines"
POD_PATH: Final = "/mutate-pods"
NOOP_PATH: Final = "/mutate-noop"
REVIEW_PATHS: Final = frozenset((VM_PATH, POD_PATH, NOOP_PATH))
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


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, whatever server sends it."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    @classmethod
    def json(cls, status: int, document: dict[str, Any], *extra: tuple[str, str]) -> Reply:
        body = json.dumps(document, separators=(",", ":")).encode()
        return cls(status, body, (("Content-Type", "application/json"), *extra))


@dataclass(frozen=True, slots=True)
class Review:
    """A well-formed review on its way to an answer."""

    path: str
    request: AdmissionRequest
    #: perf_counter() when its body had been read (the latency metric starts there).
    started: float

    @property
    def resource(self) -> str:
        return _resource(self.path)


def _resource(path: str) -> str:
    """The resource a review path is for (``/mutate-pods`` → ``pods``), as the metrics name it."""
    return path.removeprefix("/mutate-")


class WebhookApp:
    """Routes reviews to the admission logic; a WSGI application too."""

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
        self._review_vm = functools.partial(review_virtual_machine, labels=migration_labels)

    # --- routing, whatever the server ----------------------------------------------------------

    def answer(self, method: str, path: str) -> Reply | None:
        """The answer to a request that is not a review; ``None`` for a review (read its body
        and :meth:`prepare` it)."""
        if path in REVIEW_PATHS:
            if method != "POST":
                return Reply.json(405, {"error": "use POST"}, ("Allow", "POST"))
            return None
        if path == "/healthz":
            return Reply.json(200, {"status": "ok"})
        if path == "/metrics" and method == "GET":
            return Reply(200, exposition(self._registry), (("Content-Type", CONTENT_TYPE),))
        return Reply.json(404, {"error": f"no such path: {path}"})

    def prepare(self, path: str, body: bytes | None) -> Reply | Review:
        """Parse a review's body (``None``: it was larger than a review may be)."""
        started = time.perf_counter()
        resource = _resource(path)
        if body is None:
            self._count(resource, "too_large", started)
            message = f"The AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes."
            return Reply.json(413, {"error": message})
        try:
            return Review(path, parse_review(body), started)
        except MalformedReview as exc:
            self._count(resource, "malformed", started)
            return Reply.json(400, {"error": exc.message})

    def quick(self, review: Review) -> Reply | None:
        """The answer where no write transaction is needed (never waiting for the writer
        turn), else ``None``: then :meth:`transact` answers."""
        return self._settle(review, self._quick_result)

    def transact(self, review: Review) -> Reply:
        """The answer from a write transaction (the group commit's)."""
        reply = self._settle(review, self._transact_result)
        assert reply is not None
        return reply

    def finish(self, review: Review) -> Reply:
        """The answer, the quick way if it can be."""
        reply = self.quick(review)
        return reply if reply is not None else self.transact(review)

    def _quick_result(self, review: Review) -> AdmissionResult | None:
        request = review.request
        if review.path == NOOP_PATH:
            return AdmissionResult.allow()
        _require_namespace(request)
        if review.path == POD_PATH:
            return self.group_commit.quick(review_pod, request)
        # A VM CREATE or UPDATE reads what its owner holds first: it always needs the database
        # (its other operations answer without one, so they keep the first run without it).
        return self.group_commit.quick(
            self._review_vm,
            request,
            first_without_database=request.operation not in ("CREATE", "UPDATE"),
            fast=(
                self.reserved.broker
                if self.reserved is not None and request.operation == "CREATE"
                else None
            ),
        )

    def _transact_result(self, review: Review) -> AdmissionResult:
        reviewer = review_pod if review.path == POD_PATH else self._review_vm
        return self.group_commit.transact(reviewer, review.request)

    def _settle(
        self, review: Review, step: Callable[[Review], AdmissionResult | None]
    ) -> Reply | None:
        """Run one step of a review and turn its outcome (or failure) into the answer."""
        request = review.request
        try:
            try:
                result = step(review)
            except DatabaseUnavailable as exc:
                # A refusal the API server shows to the user, not a failure its failurePolicy
                # could turn into "admitted without a MAC".
                log.warning("review on %s: database unavailable: %s", review.path, exc.detail)
                result = outage_refusal(request, exc)
        except MalformedReview as exc:
            self._count(review.resource, "malformed", review.started)
            return Reply.json(400, {"error": exc.message})
        except Exception:
            # The API server applies the webhook's failurePolicy to a 500; log the cause here.
            log.exception("review on %s failed", review.path)
            self._count(review.resource, "error", review.started)
            return Reply.json(500, {"error": "internal error; see the MacPool log"})
        if result is None:
            return None
        if not result.allowed:
            log.info(
                "refused %s %s/%s: %s",
                review.resource,
                request.namespace,
                request.name,
                result.message,
            )
        outcome = "denied" if not result.allowed else "patched" if result.patch else "allowed"
        self._count(review.resource, outcome, review.started)
        return Reply.json(200, build_response(request, result))

    def _count(self, resource: str, result: str, started: float) -> None:
        self.metrics.observe(resource, result, time.perf_counter() - started)

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (WSGI)."""
        path = environ.get("PATH_INFO", "")
        reply = self.answer(environ.get("REQUEST_METHOD", "GET"), path)
        if reply is None:
            try:
                body: bytes | None = _read_body(environ)
            except _TooLarge:
                body = None
            prepared = self.prepare(path, body)
            reply = self.finish(prepared) if isinstance(prepared, Review) else prepared
        headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
        start_response(_STATUS[reply.status], headers)
        return [reply.body]


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


# --- the listener: ASGI on uvicorn workers -----------------------------------------------------


class RotatingTLS:
    """The listener's TLS context: every handshake takes the certificate files' current one.

    The server context is the one the files held at start; its SNI callback (called for every
    handshake, with or without a server name) switches the connection to the context the files
    hold now, which :class:`CertificateFiles` rebuilds when they change, checking them at most
    every ``check_interval`` seconds.
    """

    def __init__(self, cert_path: Path, key_path: Path, *, check_interval: float) -> None:
        self.files = CertificateFiles(cert_path, key_path, check_interval=check_interval)
        self.context = self.files.context()
        self.context.sni_callback = self._select

    def _select(self, connection: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self.files.context()
        if current is not context:
            connection.context = current


class AsgiWebhook:
    """The webhook as an ASGI application: what the listener's workers serve.

    The loop reads each request and answers the quick ones itself; the write path (and, on
    PostgreSQL, every review) runs on a pool of ``threads`` threads.
    """

    def __init__(self, app: WebhookApp, *, threads: int, tls: RotatingTLS | None = None) -> None:
        self.app = app
        self.tls = tls
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="review")
        #: SQLite reads are local and never wait for a writer (WAL): safe on the loop.
        self._quick_on_loop = app.database.is_sqlite

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (read by the worker, :mod:`manager.asgi_server`)."""
        return None if self.tls is None else self.tls.context

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/metrics":
            # Reads the database (the duplicates gauge): not on the loop.
            reply = await loop.run_in_executor(self._pool, self.app.answer, method, path)
        else:
            reply = self.app.answer(method, path)
        if reply is None:
            prepared = self.app.prepare(path, await _receive_body(scope, receive))
            if isinstance(prepared, Reply):
                reply = prepared
            elif self._quick_on_loop:
                reply = self.app.quick(prepared)
                if reply is None:
                    reply = await loop.run_in_executor(self._pool, self.app.transact, prepared)
            else:
                reply = await loop.run_in_executor(self._pool, self.app.finish, prepared)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    *((name.encode(), value.encode()) for name, value in reply.headers),
                    (b"content-length", str(len(reply.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


async def _receive_body(scope: Message, receive: Receive) -> bytes | None:
    """The request body; ``None`` when it is larger than a review may be (a declared length
    over the limit is not read, but one up to ``DRAIN_LIMIT`` is drained first, so a client
    that sends the whole body before reading sees the 413 instead of a reset connection)."""
    declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
    if declared.strip().isdigit() and int(declared) > MAX_REVIEW_BYTES:
        if int(declared) <= DRAIN_LIMIT:
            while (await receive()).get("more_body"):
                pass
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REVIEW_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def webhook_options(settings: Settings, *, cert_path: Path, key_path: Path) -> dict[str, Any]:
    """gunicorn settings of the webhook listener (uvicorn workers; no access log: one line per
    VM is noise). The workers take TLS from the application (:class:`RotatingTLS`); the files
    given to gunicorn only make the arbiter check they exist and log the address as https."""
    options = gunicorn_options(settings, KubernetesSettings.of(settings).webhook_bind)
    options.update(
        worker_class=WORKER_CLASS,
        certfile=str(cert_path),
        keyfile=str(key_path),
        accesslog=None,
        proc_name="macpool-webhook",
        # The API server gives up after timeoutSeconds (≤ 30): a longer worker timeout is moot.
        timeout=30,
    )
    return options


def create_webhook_app(settings: Settings) -> WebhookApp:
    """The webhook's routes and admission logic for one worker process."""
    k8s = KubernetesSettings.of(settings)
    return WebhookApp(
        Database.from_settings(settings),
        cluster_scope=k8s.k8s_cluster_scope,
        wait_time=k8s.k8s_wait_time,
        migration_labels=MigrationLabels.parse(k8s.k8s_migration_labels),
        reserve_ahead=k8s.k8s_reserve_ahead,
    )


def create_listener_app(
    settings: Settings, *, cert_path: Path, key_path: Path, check_interval: float
) -> AsgiWebhook:
    """What one worker of the listener serves (built in the worker, after the fork)."""
    # (run_gunicorn freezes what this built out of the cyclic collector's sight.)
    return AsgiWebhook(
        create_webhook_app(settings),
        threads=settings.threads,
        tls=RotatingTLS(cert_path, key_path, check_interval=check_interval),
    )


def run_webhook(
    settings: Settings,
    *,
    cert_path: Path,
    key_path: Path,
    check_interval: float = CERT_CHECK_INTERVAL,
) -> None:
    """Serve the webhook over HTTPS until stopped (gunicorn's arbiter handles the signals)."""
    enable_multiprocess(settings.data_dir / "metrics" / "webhook")
    # Fail here, in the arbiter, on unreadable certificates (each worker loads them again).
    CertificateFiles(cert_path, key_path, check_interval=check_interval)
    log.info("webhook listening on https://%s", KubernetesSettings.of(settings).webhook_bind)
    run_gunicorn(
        functools.partial(
            create_listener_app,
            settings,
            cert_path=cert_path,
            key_path=key_path,
            check_interval=check_interval,
        ),
        webhook_options(settings, cert_path=cert_path, key_path=key_path),
    )


__all__ = [
    "NOOP_PATH",
    "POD_PATH",
    "REVIEW_PATHS",
    "VM_PATH",
    "AsgiWebhook",
    "Reply",
    "Review",
    "RotatingTLS",
    "WebhookApp",
    "create_listener_app",
    "create_webhook_app",
    "run_webhook",
    "webhook_options",
]
