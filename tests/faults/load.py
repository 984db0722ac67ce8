"""Allocation load over HTTP (threads) and the CLI (``macpool allocate`` processes), recorded.

Every request allocates for its own owner identity, so an acknowledged request names exactly
one allocation that must be stored afterwards, whatever happened to the servers meanwhile.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.faults.harness import Figures, Stored, cli, stored_allocations

SCOPE = "/"


@dataclass
class Outcome:
    kind: str  # "ack", "503", "5xx", "4xx", "refused" (no connection), "cli-error"
    seconds: float
    owner: str = ""
    mac: str = ""
    status: int = 0
    reason: str = ""
    retry_after: str | None = None


@dataclass
class Load:
    """HTTP clients round-robin over ``urls`` and CLI workers with ``cli_env``, until stopped."""

    urls: list[str]
    token: str
    http_clients: int = 4
    cli_env: dict[str, str] | None = None
    cli_workers: int = 1
    #: Each client stops after this many requests (a bound even if nobody stops it).
    max_per_client: int = 2000
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.http_clients):
            self._spawn(self._http_client, i)
        if self.cli_env is not None:
            for i in range(self.cli_workers):
                self._spawn(self._cli_worker, i)

    def _spawn(self, target: Any, index: int) -> None:
        thread = threading.Thread(target=target, args=(index,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
            assert not thread.is_alive(), "a load thread did not stop"

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _http_client(self, index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        for n in itertools.islice(itertools.count(), self.max_per_client):
            if self._stop.is_set():
                return
            url = self.urls[n % len(self.urls)]
            owner = f"http-{index}-{n}"
            began = time.monotonic()
            try:
                response = session.post(
                    f"{url}/api/v1/allocations",
                    json={"scope": SCOPE, "owner": {"kind": "device", "name": owner},
                          "interface": "eth0"},
                    timeout=30,
                )  # fmt: skip
            except requests.RequestException:
                self._record(Outcome("refused", time.monotonic() - began, owner))
                session = _fresh(session)
                time.sleep(0.05)
                continue
            self._record(_classify(response, owner, time.monotonic() - began))

    def _cli_worker(self, index: int) -> None:
        assert self.cli_env is not None
        for n in itertools.islice(itertools.count(), self.max_per_client):
            if self._stop.is_set():
                return
            owner = f"cli-{index}-{n}"
            began = time.monotonic()
            done = cli(
                self.cli_env, "allocate", "--scope", SCOPE, "--owner-name", owner,
                "--interface", "eth0", "--json",
            )  # fmt: skip
            seconds = time.monotonic() - began
            if done.returncode == 0:
                self._record(Outcome("ack", seconds, owner, json.loads(done.stdout)["mac"]))
            else:
                self._record(Outcome("cli-error", seconds, owner, reason=done.stderr.strip()))

    def acknowledged(self) -> dict[str, str]:
        """Owner name → MAC of every acknowledged allocation."""
        return {o.owner: o.mac for o in self.outcomes if o.kind == "ack"}

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def report(self, figures: Figures) -> None:
        kinds = Counter(o.kind for o in self.outcomes)
        figures.counts["requests"] = len(self.outcomes)
        for kind in ("ack", "503", "5xx", "4xx", "refused", "cli-error"):
            figures.counts[kind] = kinds.get(kind, 0)

    def settle(self, database_url: str, figures: Figures) -> tuple[list[str], Stored]:
        """Compare what was acknowledged with what is stored: the owners whose acknowledged
        allocation is missing (lost), and the stored state; both go into ``figures``."""
        stored = stored_allocations(database_url)
        lost = [o for o, mac in self.acknowledged().items() if stored.by_owner.get(o) != mac]
        self.report(figures)
        figures.counts.update(
            lost=len(lost), duplicated=stored.duplicated_macs, stored=stored.allocations
        )
        return lost, stored


def _fresh(session: requests.Session) -> requests.Session:
    fresh = requests.Session()
    fresh.headers.update(session.headers)
    session.close()
    return fresh


def _classify(response: requests.Response, owner: str, seconds: float) -> Outcome:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    if status in (200, 201):
        return Outcome("ack", seconds, owner, body["mac"], status)
    kind = "503" if status == 503 else "5xx" if status >= 500 else "4xx"
    return Outcome(
        kind,
        seconds,
        owner,
        status=status,
        reason=str(body.get("reason", "")),
        retry_after=response.headers.get("Retry-After"),
    )


__all__ = ["SCOPE", "Load", "Outcome"]
