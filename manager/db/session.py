"""Engine and session factories; no Flask here.

SQLite (the embedded default) runs in WAL mode with foreign keys on. Its write transactions
start with ``BEGIN IMMEDIATE`` so that two processes wanting to write queue on the database
lock (with a busy timeout) instead of failing when a read transaction tries to upgrade.
PostgreSQL uses READ COMMITTED plus row locks taken by the services (``SELECT … FOR UPDATE``).

SQLite lets one writer in at a time and makes the others poll in its busy handler, with sleeps
growing to 100 ms: under load a write can wait far longer than the lock is held. So write units
of work on a SQLite file first queue on a thread lock and an ``flock`` on a file beside the
database (:meth:`Database.writer_turn`), which wakes the next writer as soon as the previous one
is done, across threads and processes alike.

A database that is down, hung or locked for too long raises
:class:`~manager.core.errors.DatabaseUnavailable` instead of the driver's error, within a few
seconds: connections time out after ``CONNECT_TIMEOUT`` (and fail at once for a moment after
one failed, see :class:`~manager.db.outages.ConnectBreaker`), PostgreSQL statements after
``STATEMENT_TIMEOUT`` (server side), round trips a hung server never answers are broken by a
:class:`~manager.db.outages.RoundTripWatchdog`, waiting for a pooled connection ends after
``POOL_TIMEOUT``, and SQLite's busy handler gives up after ``SQLITE_BUSY_TIMEOUT_MS``. The pool
pings a connection before lending it, so the first request after an outage works again.

Checkpoints (copying the WAL back into the database file, with an fsync) run in a background
thread of each writing process (:class:`_Checkpointer`), not inside a writer's COMMIT: SQLite's
automatic checkpoint made every ~80th commit take 4-5 ms while all other writers waited.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from manager.config import Settings
from manager.core.errors import DatabaseUnavailable
from manager.db.outages import (
    ConnectBreaker,
    RoundTripWatchdog,
    as_unavailable,
    watch_round_trips,
)
from manager.db.prepared import Prepared

SQLITE_BUSY_TIMEOUT_MS = 5_000
#: Seconds to establish a PostgreSQL connection (libpq's and psycopg's minimum is 2).
CONNECT_TIMEOUT = 2
#: Seconds a PostgreSQL statement may run before the server cancels it.
STATEMENT_TIMEOUT = 3.0
#: Seconds a round trip may wait for an answer before the watchdog breaks the connection
#: (beyond STATEMENT_TIMEOUT: a live server cancels its own slow statements first).
ROUND_TRIP_LIMIT = STATEMENT_TIMEOUT + 0.5
#: Seconds the pool's liveness ping may take before the connection is replaced.
PING_LIMIT = 1.5
#: Seconds new connections fail at once after a failed one (then one thread probes).
BREAKER_COOLDOWN = 1.0
#: Seconds a thread waits for a free pooled connection.
POOL_TIMEOUT = 3.0
#: A committing connection checkpoints the WAL itself only past this many pages (SQLite's
#: default is 1,000): a safety net, the background checkpointer normally runs long before.
WAL_AUTOCHECKPOINT_PAGES = 10_000
#: Seconds between two background checkpoints of a database this process writes to.
CHECKPOINT_INTERVAL = 0.2
#: Free MACs left in a pool at which a warning event is recorded (``MACPOOL_LOW_THRESHOLD``).
DEFAULT_LOW_THRESHOLD = Settings.low_threshold
#: Rounds without new WAL frames after which the checkpoint thread ends (the next write
#: starts it again): an idle process keeps no thread polling a file it no longer writes.
CHECKPOINT_IDLE_ROUNDS = 50

log = logging.getLogger("macpool.db")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself, so we choose its flavour.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("macpool_write") else ""
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _translate_outages(engine: Engine) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            return None  # the pool replaces the connection; only a failing reconnect is an outage
        return as_unavailable(
            context.original_exception, context.dialect, disconnect=context.is_disconnect
        )


class _Pool(QueuePool):
    """The pool of a server database: waiting too long for a connection is an outage too."""

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError as exc:
            raise DatabaseUnavailable(str(exc)) from exc


def _server_connect_args(url: Any) -> dict[str, Any]:
    """psycopg's connection arguments: connect and statement timeouts (kept if the URL sets them)."""
    args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = CONNECT_TIMEOUT
    options = str(url.query.get("options", ""))
    if "statement_timeout" not in options:
        timeout = f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}"
        args["options"] = f"{options} {timeout}".strip()
    return args


def _guard_connects(engine: Engine, breaker: ConnectBreaker) -> None:
    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        breaker.before_connect()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception:
            breaker.failed()
            raise
        breaker.succeeded()
        return connection


class _Checkpointer:
    """Copies one database's WAL back into the file from a thread, every CHECKPOINT_INTERVAL.

    ``PASSIVE`` checkpoints never wait for readers or writers, and SQLite releases the GIL
    while it copies: the writers go on meanwhile. The thread ends after CHECKPOINT_IDLE_ROUNDS
    rounds without new frames; :meth:`ensure_running` (called at each writer turn) restarts it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def ensure_running(self) -> None:
        if self.running:
            return
        with self._lock:
            if not self.running:
                self._thread = threading.Thread(
                    target=self._run, name="macpool-wal-checkpoint", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("cannot checkpoint %s: %s", self.path, exc)
            return
        idle, frames = 0, -1
        try:
            while idle < CHECKPOINT_IDLE_ROUNDS:
                time.sleep(CHECKPOINT_INTERVAL)
                try:
                    _busy, wal_frames, _done = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchone()
                except sqlite3.Error as exc:  # the file went away, or is not a database now
                    log.debug("checkpoint of %s stopped: %s", self.path, exc)
                    return
                idle = idle + 1 if wal_frames == frames else 0
                frames = wal_frames
        finally:
            conn.close()


class _WriterQueue:
    """One process's place in the queue of writers to a SQLite file, and its checkpointer."""

    def __init__(self, database_path: str) -> None:
        self.path = database_path + ".write-lock"
        self.lock = threading.RLock()  # re-entrant: a nested write session fails loudly, not hangs
        self._fd: int | None = None
        self.checkpointer = _Checkpointer(database_path)

    @contextmanager
    def turn(self) -> Iterator[None]:
        self.checkpointer.ensure_running()
        with self.lock:
            if self._fd is None:
                # One file description per process: an flock belongs to the description, so
                # forked children must not reuse it (see _forget_queues_after_fork).
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_queues: dict[str, _WriterQueue] = {}
_queues_lock = threading.Lock()


def _forget_queues_after_fork() -> None:
    """A forked child (a gunicorn worker) starts with its own, empty writer queues.

    The parent's queues hold lock-file descriptors whose ``flock`` the child would share (so
    two workers would both "hold" it and fall back on SQLite's sleeping busy handler), thread
    locks that another parent thread may have held at the fork, and checkpoint threads that do
    not exist in the child.
    """
    global _queues_lock
    for queue in _queues.values():
        if queue._fd is not None:
            # Closing the child's copy leaves the parent's lock alone (no LOCK_UN).
            os.close(queue._fd)
    _queues.clear()
    _queues_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_queues_after_fork)


class UnitOfWork(Session):
    """A session of one :class:`Database`, carrying the database's allocation policy.

    Every channel's session comes from ``Database.session`` or ``Database.new_session``, so a
    setting given to the database once reaches every service call, whoever opened the session.

    It also lets the services put back in-memory state a transaction changed, whoever rolls
    it back: :meth:`before_rollback` registers an undo that :meth:`rollback` runs first, while
    the transaction still holds its locks; the end of the transaction in any other way
    (commit, close) forgets it.
    """

    def __init__(
        self, *args: Any, low_threshold: int = DEFAULT_LOW_THRESHOLD, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        #: Free MACs left in a pool at which the services record a warning event.
        self.low_threshold = low_threshold
        self._undo: list[Callable[[], None]] = []

    def before_rollback(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` if this transaction is rolled back with :meth:`rollback` (last first)."""
        self._undo.append(undo)

    def rollback(self) -> None:
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()
        super().rollback()


@event.listens_for(UnitOfWork, "after_transaction_end")
def _forget_undo(session: UnitOfWork, transaction: SessionTransaction) -> None:
    """The outermost transaction ended: what it changed is for good (or left to reload)."""
    if transaction.parent is None:
        session._undo.clear()


class Database:
    """One database: an engine plus read and write session factories."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 10,
        low_threshold: int = DEFAULT_LOW_THRESHOLD,
    ) -> None:
        self.url = make_url(url)
        self.low_threshold = low_threshold
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            }
        else:
            kwargs["poolclass"] = _Pool
            kwargs["pool_size"] = pool_size
            kwargs["pool_pre_ping"] = True
            kwargs["pool_timeout"] = POOL_TIMEOUT
            if self.dialect == "postgresql":
                kwargs["connect_args"] = _server_connect_args(self.url)
        self.engine = create_engine(self.url, **kwargs)
        #: Breaks round trips a hung server never answers (PostgreSQL over psycopg only).
        self.watchdog: RoundTripWatchdog | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        elif self.url.get_driver_name() == "psycopg":
            breaker = ConnectBreaker(cooldown=BREAKER_COOLDOWN, probe=CONNECT_TIMEOUT + 1.0)
            _guard_connects(self.engine, breaker)
            self.watchdog = RoundTripWatchdog(on_break=breaker.failed)
            watch_round_trips(
                self.engine.dialect, self.watchdog, limit=ROUND_TRIP_LIMIT, ping=PING_LIMIT
            )
        _translate_outages(self.engine)
        write_engine = self.engine.execution_options(macpool_write=True)
        self._read = sessionmaker(
            bind=self.engine,
            class_=UnitOfWork,
            expire_on_commit=False,
            low_threshold=low_threshold,
        )
        #: Per-thread connections of ``autocommit_rows`` (SQLite).
        self._local = threading.local()
        self._write = sessionmaker(
            bind=write_engine,
            class_=UnitOfWork,
            expire_on_commit=False,
            low_threshold=low_threshold,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Database:
        """The database the settings name, with the settings' allocation policy."""
        return cls(settings.effective_database_url, low_threshold=settings.low_threshold, **kwargs)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def migration_engine(self) -> Engine:
        """An engine for schema migrations: without the statement timeout and the watchdog
        (building an index on a large table may take minutes), with the connect timeout.
        The caller disposes of it."""
        if self.is_sqlite:
            return self.engine
        args = {"connect_timeout": CONNECT_TIMEOUT} if self.dialect == "postgresql" else {}
        engine = create_engine(self.url, poolclass=NullPool, connect_args=args)
        _translate_outages(engine)
        return engine

    def new_session(self, *, write: bool = False) -> UnitOfWork:
        """A session the caller owns (and must commit or roll back, then close)."""
        return (self._write if write else self._read)()

    def writer_turn(self) -> Any:
        """A context in which this thread is the only writer queued on a SQLite file."""
        name = self.url.database
        if not self.is_sqlite or not name or name == ":memory:":
            return nullcontext()
        path = os.path.abspath(name)
        with _queues_lock:
            queue = _queues.get(path)
            if queue is None:
                queue = _queues[path] = _WriterQueue(path)
        return queue.turn()

    @contextmanager
    def session(self, *, write: bool = False, take_turn: bool = True) -> Iterator[UnitOfWork]:
        """A unit of work: committed when the block succeeds, rolled back when it raises.

        ``take_turn=False``: the caller holds this file's writer turn already."""
        with self.writer_turn() if write and take_turn else nullcontext():
            session = self.new_session(write=write)
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def autocommit_rows(self, statement: Prepared, params: Mapping[str, Any]) -> list[Any]:
        """Rows of one read statement, run outside any transaction (its own snapshot).

        The cheapest read there is, for a hot path: on SQLite each thread keeps a connection of
        its own, taken out of the pool once, in autocommit mode (no BEGIN, no pool checkout);
        elsewhere a pooled connection runs the statement in a transaction of its own.
        """
        if self.is_sqlite:
            dbapi = getattr(self._local, "connection", None)
            if dbapi is None or self._local.pid != os.getpid():
                fairy = self.engine.raw_connection()
                fairy.detach()
                dbapi = self._local.connection = fairy.dbapi_connection
                self._local.pid = os.getpid()
            return statement.rows_on(dbapi, self.engine.dialect, params)
        with self.engine.connect() as conn, conn.begin():
            return statement.rows(conn, params)

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


__all__ = ["DEFAULT_LOW_THRESHOLD", "Database", "UnitOfWork"]
