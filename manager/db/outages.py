"""How ``manager.db`` notices an unavailable database and reports it as one error.

:func:`as_unavailable` names the driver errors that mean "the database is not available now"
(refused or lost connections, timeouts, shutdown, SQLite's busy database); the engine raises
:class:`~manager.core.errors.DatabaseUnavailable` in their place.

Break PostgreSQL connections whose server stopped answering, so no thread waits forever.

A server that is down refuses connections at once, and ``statement_timeout`` ends statements
that run too long on a server that still works. A *hung* server (a stopped process, a network
path that swallows packets, a proxy that stopped forwarding) does neither: the kernel keeps
acknowledging what the client sends, so neither TCP keepalives nor ``tcp_user_timeout`` fire,
and the driver waits for an answer forever while it holds a request's thread.

:class:`RoundTripWatchdog` times every round trip to the server (statements, commits,
rollbacks, pool pings). A round trip that outlives its limit gets its socket shut down from
the watchdog's thread: the waiting driver sees the connection closed, raises a disconnect
error (which ``manager.db`` turns into ``DatabaseUnavailable``), and the pool discards the
connection. ``shutdown()`` leaves the file descriptor open, so it cannot hit a reused number.

:class:`ConnectBreaker` keeps a whole request pool from waiting on a server known to be away:
after a failed connection (or a broken round trip) new connections fail at once for a moment,
then one thread at a time probes the server until a connection succeeds again.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from manager.core.errors import DatabaseUnavailable

log = logging.getLogger("macpool.db")

#: SQLSTATE classes (first two characters) and codes that mean "the database is not available
#: now" rather than "this request is wrong": connection exceptions, operator intervention
#: (shutdown, statement timeout), insufficient resources, lock not available (lock_timeout).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
UNAVAILABLE_SQLSTATES = ("55P03",)
#: SQLite primary result codes of an unavailable database: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
UNAVAILABLE_SQLITE_CODES = (5, 6, 10, 13, 14)


def as_unavailable(
    error: BaseException, dialect: Any, *, disconnect: bool
) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable a driver error stands for, if it is an outage."""
    if disconnect:
        return DatabaseUnavailable(str(error))
    if type(error).__module__.startswith("psycopg"):
        sqlstate = getattr(error, "sqlstate", None)
        outage = sqlstate is None or (
            sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in UNAVAILABLE_SQLSTATES
        )
        if outage and isinstance(error, dialect.loaded_dbapi.OperationalError):
            return DatabaseUnavailable(str(error))
        return None
    code = getattr(error, "sqlite_errorcode", 0)
    if isinstance(error, sqlite3.OperationalError) and code & 0xFF in UNAVAILABLE_SQLITE_CODES:
        return DatabaseUnavailable(str(error))
    return None


class RoundTripWatchdog:
    """Shuts down the socket of any round trip still waiting after its limit."""

    def __init__(
        self, *, interval: float = 0.1, on_break: Callable[[], None] | None = None
    ) -> None:
        self.interval = interval
        self.on_break = on_break
        self._lock = threading.Condition()
        self._waiting: dict[int, tuple[float, Any]] = {}
        self._tokens = iter(range(1, 2**62))
        self._thread: threading.Thread | None = None
        self._sleeping = False
        #: Round trips broken so far (for logs and tests).
        self.broken = 0

    @contextmanager
    def round_trip(self, dbapi_connection: Any, limit: float) -> Iterator[None]:
        """A context around one wait for the server on ``dbapi_connection``."""
        with self._lock:
            token = next(self._tokens)
            self._waiting[token] = (time.monotonic() + limit, dbapi_connection)
            self._ensure_running()
            if self._sleeping:
                # Only a watchdog that found nothing to watch sleeps without a timeout; an
                # awake one looks again within ``interval``, long before any limit runs out,
                # so statements do not wake it one by one.
                self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                self._waiting.pop(token, None)

    def _ensure_running(self) -> None:
        # A forked child (a gunicorn worker) inherits the object but not the thread.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="macpool-db-watchdog", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._waiting:
                    self._sleeping = True
                    self._lock.wait()
                    self._sleeping = False
                    continue
                now = time.monotonic()
                for token, (deadline, connection) in list(self._waiting.items()):
                    if deadline <= now:
                        # Under the lock: the waiting thread is still inside its round trip,
                        # so the connection (and its socket) cannot have been closed yet.
                        del self._waiting[token]
                        self._break(connection)
                self._lock.wait(self.interval)

    def _break(self, connection: Any) -> None:
        try:
            fd = connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception as exc:  # already closed or broken: nothing left to wake
            log.debug("could not break a hung database connection: %s", exc)
            return
        self.broken += 1
        log.warning("the database did not answer in time; connection closed")
        if self.on_break is not None:
            self.on_break()


class ConnectBreaker:
    """Fails new connections at once for ``cooldown`` seconds after a failure; then lets one
    thread at a time try (for up to ``probe`` seconds) until one succeeds."""

    def __init__(self, *, cooldown: float, probe: float) -> None:
        self.cooldown = cooldown
        self.probe = probe
        self._lock = threading.Lock()
        self._failing = False
        self._closed_until = 0.0

    def before_connect(self) -> None:
        """Raise :class:`DatabaseUnavailable` unless this thread may try to connect."""
        with self._lock:
            if not self._failing:
                return
            now = time.monotonic()
            if now < self._closed_until:
                raise DatabaseUnavailable("the database failed moments ago; not retrying yet")
            self._closed_until = now + self.probe  # this thread probes; the others fail fast

    def succeeded(self) -> None:
        with self._lock:
            self._failing = False

    def failed(self) -> None:
        with self._lock:
            self._failing = True
            self._closed_until = time.monotonic() + self.cooldown


def watch_round_trips(
    dialect: Any, watchdog: RoundTripWatchdog, *, limit: float, ping: float
) -> None:
    """Time the dialect's round trips to the server with ``watchdog``.

    Statements, commits and rollbacks get ``limit`` seconds; the pool's ping gets ``ping``
    (a shorter limit: a ping that fails is only followed by a reconnect).
    """

    def timed(method: Callable[..., Any], seconds: float, conn_of: Callable[..., Any]) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with watchdog.round_trip(conn_of(*args), seconds):
                return method(*args, **kwargs)

        return wrapper

    def by_cursor(cursor: Any, *_: Any) -> Any:
        return cursor.connection

    def by_connection(connection: Any, *_: Any) -> Any:
        return connection

    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        setattr(dialect, name, timed(getattr(dialect, name), limit, by_cursor))
    for name in ("do_commit", "do_rollback"):
        setattr(dialect, name, timed(getattr(dialect, name), limit, by_connection))
    dialect.do_ping = timed(dialect.do_ping, ping, by_connection)


__all__ = ["ConnectBreaker", "RoundTripWatchdog", "as_unavailable", "watch_round_trips"]
