"""Real processes for the fault suite: a throwaway PostgreSQL, a loopback TCP proxy that can
stop forwarding, ``macpool serve`` replicas, and the figures each fault test reports.

Everything listens on 127.0.0.1 and is stopped by the fixtures that start it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.plugins.kubernetes.webhook_harness import free_port

MACPOOL = Path(sys.executable).with_name("macpool")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent)
    return found[-1].parent if found else None


class Postgres:
    """A PostgreSQL cluster of our own (so a test may stop it), in ``root`` on a free port."""

    def __init__(self, root: Path) -> None:
        binaries = postgres_bin()
        assert binaries is not None, "PostgreSQL is not installed"
        self.bin = binaries
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        as_root = os.getuid() == 0
        self._run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
        root.chmod(0o755)
        for directory in (self.data, root / "sock"):
            directory.mkdir(mode=0o700)
            if as_root:
                shutil.chown(directory, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self._pg(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-qc",
            "CREATE DATABASE macpool",
        )  # fmt: skip

    def url(self, port: int | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port or self.port}/macpool"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._run_as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.root / "sock" / "pg.log")
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", "-o", options, "start"
        )

    def stop(self) -> None:
        """A fast shutdown: open connections are closed, the port refuses new ones."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class FreezingProxy:
    """A loopback TCP proxy in front of ``target_port`` that can stop forwarding.

    Frozen, it still accepts connections (the kernel does the handshake) but forwards nothing
    in either direction: to its clients the server looks hung, not down.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        peers = {client: upstream, upstream: client}
        try:
            while not self.stopped.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self.frozen.is_set():
                    continue  # hold whatever arrives: nothing goes through, nothing closes
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()


@dataclass
class Replica:
    """One ``macpool serve`` process."""

    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(MACPOOL), "serve", "--bind", f"127.0.0.1:{self.port}"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kill -9 reaches gunicorn's workers too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"macpool serve exited:\n{self.log.read_text()[-3000:]}")
            with suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"macpool serve did not answer:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        """``kill -9`` of the whole replica (arbiter and workers) at once."""
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()


def replica_env(data_dir: Path, database_url: str = "", **extra: str) -> dict[str, str]:
    """The environment of a replica on ``database_url`` (SQLite in ``data_dir`` when empty)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACPOOL_")}
    env.update(
        MACPOOL_DATA_DIR=str(data_dir),
        MACPOOL_PLUGINS="",
        MACPOOL_DEFAULT_RANGE="02:00:00:00:00:00-02:00:00:ff:ff:ff",
        MACPOOL_SECRET_KEY="fault-suite-shared-secret",
        MACPOOL_WORKERS="2",
        MACPOOL_THREADS="4",
        MACPOOL_LOG_LEVEL="WARNING",
    )
    if database_url:
        env["MACPOOL_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``macpool ARGS`` with ``env``."""
    return subprocess.run(
        [str(MACPOOL), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def create_token(env: dict[str, str], role: str = "operator") -> str:
    done = cli(env, "token", "create", "--role", role, "--name", f"faults-{role}", "--json")
    assert done.returncode == 0, done.stderr
    token: str = json.loads(done.stdout)["token"]
    return token


@contextmanager
def replicas(envs: list[dict[str, str]], root: Path) -> Iterator[list[Replica]]:
    """Start one replica per environment (each on a free port); stop them all afterwards."""
    started = [Replica(env, free_port(), root / f"replica-{i}.log") for i, env in enumerate(envs)]
    try:
        for replica in started:
            replica.start()
        yield started
    finally:
        for replica in started:
            replica.stop()


@dataclass
class Figures:
    """What one fault test reports: requests acknowledged, lost, duplicated, 5xx, ..."""

    name: str
    counts: dict[str, int | float] = field(default_factory=dict)

    def add(self, key: str, amount: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + amount

    def line(self) -> str:
        return f"FAULT {self.name}: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())


@dataclass
class Stored:
    """What the database holds after a fault: allocations by owner, and MACs held twice."""

    by_owner: dict[str, str]
    duplicated_macs: int
    allocations: int
    held_macs: int


def stored_allocations(database_url: str) -> Stored:
    """Read the allocations of the fault suite's owners straight from the database."""
    from sqlalchemy import func, select

    from manager.core.mac import format_mac_int
    from manager.db import Allocation, Database, HeldMac

    db = Database(database_url)
    try:
        with db.session() as session:
            rows = session.execute(select(Allocation.owner_name, Allocation.mac)).all()
            held = session.scalar(select(func.count()).select_from(HeldMac)) or 0
    finally:
        db.dispose()
    macs = [mac for _, mac in rows]
    return Stored(
        by_owner={owner: format_mac_int(mac) for owner, mac in rows},
        duplicated_macs=len(macs) - len(set(macs)),
        allocations=len(rows),
        held_macs=held,
    )


__all__ = [
    "Figures",
    "FreezingProxy",
    "Postgres",
    "Replica",
    "Stored",
    "cli",
    "create_token",
    "postgres_bin",
    "replica_env",
    "replicas",
    "stored_allocations",
]
