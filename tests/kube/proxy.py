"""A loopback TCP relay between MacPool and the API server that a test can cut and restore.

Cutting closes every relayed connection (watches included) and refuses new ones, as a network
partition would; TLS passes through untouched, so MacPool still verifies the API server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class Relay:
    """``127.0.0.1:port`` → ``target``; :meth:`cut` and :meth:`restore` flip the link."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.open.set()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="relay", daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True
        self.listener.close()
        self._close_all()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        self.open.clear()
        self._close_all()

    def restore(self) -> None:
        self.open.set()

    def _close_all(self) -> None:
        with self.lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.connections.clear()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self.lock:  # the second pump of a pair closes both ends
            if source in self.connections:
                self.connections.discard(source)
            else:
                source.close()
            if sink in self.connections:
                self.connections.discard(sink)
            else:
                sink.close()
