"""uvicorn workers under gunicorn's arbiter: the server of listeners whose cost per request counts.

gunicorn's threaded worker spends most of a small request's CPU on itself: at the paced rates a
Kubernetes API server sends admission reviews (150-350/s), a review that does nothing cost its
listener 0.7-0.8 ms of CPU, against 0.2-0.3 ms for the same answer from an event loop on uvloop
with the httptools parser (docs/BENCHMARKS.md). :class:`AsgiWorker` runs one such uvicorn server
per worker process, on the sockets the arbiter opened. The arbiter keeps everything else a
MacPool listener relies on: the bind, the number of workers, a new worker when one dies or stops
reporting, graceful stop on SIGTERM, and the ``child_exit`` hook (the metrics of a finished
worker stop counting).

Limits, as gunicorn's worker had them: at most ``worker_connections`` connections or requests
at once per worker (then 503), and a request's head (request line and header fields) of at most
:data:`MAX_HEAD_BYTES` (then 431 and the connection is closed). The body is the application's
to bound.

The application is an ASGI callable. If it has a ``tls_context()`` method, its answer is the
server's TLS context (``None``: plain HTTP); the application owns the certificates, so it can
rotate them without a restart (see ``plugins.kubernetes.server.RotatingTLS``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any, Final

import uvloop
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker
from uvicorn import Config, Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: How often (seconds) a worker tells the arbiter it is alive and checks the arbiter still is.
HEARTBEAT: Final = 1.0

#: The ``worker_class`` setting that selects this worker.
WORKER_CLASS: Final = "manager.asgi_server.AsgiWorker"
#: How long (seconds) closing a TLS connection waits for the peer's close_notify. On a stop,
#: each idle keep-alive connection is closed; a peer that is not reading (an API server's
#: pooled connection) never answers, and the loop's default, 30 s, held every stop until the
#: graceful timeout ran out.
TLS_SHUTDOWN_TIMEOUT: Final = 1.0


#: The most a request's head (request line and header fields) may take. httptools sets no
#: limit of its own; gunicorn's were a 4 KiB request line and 100 fields of 8 KiB each.
MAX_HEAD_BYTES: Final = 64 * 1024

_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 36\r\n"
    b"connection: close\r\n\r\n"
    b"The request's headers are too large."
)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on a request's head: a head over
    :data:`MAX_HEAD_BYTES` gets 431 and the connection is closed, whether it arrives at once or
    a few bytes at a time, instead of the worker holding whatever a client sends.

    The head is measured before the parser sees the bytes: from the start of a chunk read while
    a head is expected up to the blank line that ends it. (Requests pipelined behind a body in
    the same chunk are not measured; the API server does not pipeline.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes of the head received so far; None while a body is being read.
        self._head_bytes: int | None = 0

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            end = data.find(b"\r\n\r\n")
            head = len(data) if end < 0 else end + 4
            if self._head_bytes + head > MAX_HEAD_BYTES:
                self.logger.warning("request head over %d bytes: refused", MAX_HEAD_BYTES)
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
            if end < 0:
                self._head_bytes += len(data)
        super().data_received(data)


class _Loop(uvloop.Loop):
    """uvloop with a short TLS shutdown for the servers it makes (uvicorn cannot pass it)."""

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_shutdown_timeout", TLS_SHUTDOWN_TIMEOUT)
        return await super().create_server(*args, **kwargs)


class AsgiWorker(Worker):  # type: ignore[misc]
    """A gunicorn worker that serves its ASGI application with uvicorn (uvloop, httptools)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn logs through these; send them where gunicorn's own error log goes.
        for name in ("uvicorn", "uvicorn.error"):
            logger = logging.getLogger(name)
            logger.handlers = self.log.error_log.handlers
            logger.setLevel(self.log.error_log.level)
            logger.propagate = False

    def init_signals(self) -> None:
        # uvicorn's server installs its own SIGINT/SIGTERM handlers on the loop; gunicorn's
        # (set by the base class) would only mark the worker dead without stopping uvicorn.
        for number in self.SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def _config(self) -> Config:
        config = Config(
            self.wsgi,
            interface="asgi3",
            loop="uvloop",
            http=BoundedHttpTools,
            limit_concurrency=self.cfg.worker_connections,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=self.cfg.keepalive,
            timeout_graceful_shutdown=self.cfg.graceful_timeout,
            backlog=self.cfg.backlog,
            limit_max_requests=self.max_requests or None,
        )
        config.load()
        tls_context = getattr(self.wsgi, "tls_context", None)
        config.ssl = tls_context() if tls_context is not None else None
        return config

    def run(self) -> None:
        server = Server(self._config())
        with asyncio.Runner(loop_factory=_Loop) as runner:
            runner.run(self._serve(server))
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    async def _serve(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        # SIGQUIT is the arbiter's "stop now": no graceful wait.
        loop.add_signal_handler(signal.SIGQUIT, _force_exit, server)
        heartbeat = loop.create_task(self._heartbeat(server))
        try:
            await server.serve(sockets=self.sockets)
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, server: Server) -> None:
        """Report to the arbiter; stop serving when the arbiter is gone (as gunicorn's own
        workers do: an orphaned worker would otherwise hold the port forever)."""
        while not server.should_exit:
            self.notify()
            if os.getppid() != self.ppid:
                self.log.info("Parent changed, shutting down: %s", self)
                server.should_exit = True
                return
            await asyncio.sleep(HEARTBEAT)


def _force_exit(server: Server) -> None:
    server.should_exit = server.force_exit = True


__all__ = [
    "HEARTBEAT",
    "MAX_HEAD_BYTES",
    "TLS_SHUTDOWN_TIMEOUT",
    "WORKER_CLASS",
    "AsgiWorker",
    "BoundedHttpTools",
]
