"""Answering VM CREATE reviews from MACs reserved ahead (docs/RESERVED_MACS.md).

A webhook process keeps, per pool, a block of MACs it reserved in the database
(:func:`manager.services.reservations.reserve_macs`). A VM CREATE whose interfaces all want the
next free MAC, for an owner that holds nothing yet, is answered from that block without a
write transaction: :class:`ReserveBroker` is the :class:`~plugins.kubernetes.broker.MacBroker`
of that fast path. The answers are recorded by a background thread within
:data:`RECORD_INTERVAL` (each reservation becomes the VM's pending allocation in place), and
the same thread refills the blocks and releases what it will not hand out any more.

Everything else (requested MACs, updates, migrated VMs, dry runs, a namespace never seen, an
empty block, a topology change) makes the broker raise
:class:`~plugins.kubernetes.group_commit.NeedsDatabase`, and the review runs the ordinary way,
in a write transaction, after the answers still unrecorded have been written
(:meth:`ReservedMacs.record_now`), so it sees every MAC this process has answered.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.errors import DatabaseUnavailable, MacPoolError
from manager.core.mac import format_mac_int
from manager.services import (
    Answer,
    Database,
    Reserved,
    Target,
    expire_reservations,
    owner_snapshot,
    record_answers,
    release_reservations,
    reserve_macs,
    resolve_target,
)
from plugins.kubernetes.broker import NicClaim, Owner
from plugins.kubernetes.group_commit import NeedsDatabase
from plugins.kubernetes.scoping import namespace_scope_path
from plugins.kubernetes.service_broker import namespace_scope

log = logging.getLogger(__name__)

#: Answers are recorded at least this often (the API sees an answered MAC within ~this).
RECORD_INTERVAL: Final = 0.1
#: MACs reserved per pool at a time, at most and at least (one in-process thread answers
#: ~3,000 reviews/s: a block must outlast the recorder's refill, under load ~0.1-0.3 s).
MAX_BLOCK: Final = 1024
MIN_BLOCK: Final = 16
#: A block holds about this many seconds of the demand seen (see block_size).
BLOCK_SECONDS: Final = 2.0
#: A reserve never takes a pool below this many free MACs (or 4 blocks): a nearly full pool
#: is served by the ordinary path, with its exact exhaustion errors.
KEEP_FREE: Final = 1024
#: An answer not recorded after this long means the database is not taking writes: stop
#: answering from the reserve (the ordinary path then reports the outage).
RECORD_STALL: Final = 0.5
#: How long a recorded answer is still remembered in process (a retry of the same review
#: finds it even if its read raced the recording).
LEDGER_TTL: Final = 10.0
#: Expired reservations of every process are swept this often (seconds).
SWEEP_INTERVAL: Final = 5
#: A namespace without a scope is read again after this long (seconds): its scope is made by
#: this process's recorder, or by another process or the write path meanwhile.
PLANNED_TTL: Final = 0.1
#: No scope has this id: the owner read of a planned target finds nothing but the generation.
NO_SCOPE: Final = -1


def block_size(handed: int, seconds: float, previous: int = MIN_BLOCK) -> int:
    """The next block of a pool's reserve: BLOCK_SECONDS of the demand since the last refill,
    at least twice what went meanwhile (a burst) and at least half the ``previous`` block,
    within MIN_BLOCK and MAX_BLOCK.

    Each refill is a write transaction whose fixed cost (pool lock, scope and pool reads,
    commit) is paid once per block: at a steady 200 VMs/s, blocks of one tick's demand cost
    the recorder more than the reviews themselves. The block shrinks by halves: the demand
    measured across a quiet spell says nothing of the burst that ends it, and a block sized
    by it ran dry within milliseconds, sending every review of the process to the write path
    behind the other processes' refills (0.4 s stalls).
    """
    rate = handed / max(seconds, RECORD_INTERVAL)
    wanted = max(round(rate * BLOCK_SECONDS), 2 * handed, previous // 2)
    return max(MIN_BLOCK, min(MAX_BLOCK, wanted))


def reservation_ttl(wait_time: int) -> int:
    """A reservation's lifetime: expired, it is swept (by any process) within the wait time."""
    if wait_time > 2 * SWEEP_INTERVAL:
        return int(wait_time - SWEEP_INTERVAL)
    return max(1, wait_time // 2)


@dataclass
class _PoolReserve:
    target: Target
    free: deque[Reserved] = field(default_factory=deque)
    #: MACs handed out from this pool since the last refill (at monotonic ``since``), for the
    #: size of the next block.
    handed: int = 0
    since: float = field(default_factory=time.monotonic)
    block: int = MIN_BLOCK
    wanted: bool = False
    #: Refill failed (pool nearly full, …): not before this monotonic time.
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Entry:
    macs: dict[str, int]
    #: Monotonic time of recording (None: not recorded yet).
    recorded: float | None = None


class ReservedMacs:
    """One process's reserves, namespace cache, unrecorded answers and recorder thread."""

    def __init__(
        self,
        database: Database,
        *,
        cluster_scope: str,
        wait_time: int,
        actor: Actor,
        record_interval: float = RECORD_INTERVAL,
    ) -> None:
        self.database = database
        self.cluster_scope = cluster_scope
        self.wait_time = wait_time
        self.actor = actor
        self.record_interval = record_interval
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._generation = 0
        self._targets: dict[str, Target] = {}
        self._pools: dict[int, _PoolReserve] = {}
        self._pending: list[Answer] = []
        self._oldest_pending = 0.0
        self._ledger: dict[tuple[str, str, str], _Entry] = {}
        #: (monotonic time, key) of each recording, oldest first: the ledger forgets what is
        #: LEDGER_TTL old without walking its ~10 s of answers at every record.
        self._recorded: deque[tuple[float, tuple[str, str, str]]] = deque()
        #: Until when (monotonic) a cached planned target is used without a new read.
        self._planned_until: dict[str, float] = {}
        #: Scope ids the recorder made (or found) for answers given to planned targets, by path;
        #: the cache takes them after the transaction.
        self._made: dict[str, int] = {}
        self._release: list[int] = []
        self._next_interface = 0
        self._next_sweep = 0.0
        #: The recorder's transactions and the group commit's flush take turns.
        self._record_lock = threading.Lock()

    # --- the review's side ---------------------------------------------------------------------

    def broker(self) -> ReserveBroker:
        self._ensure_started()
        return ReserveBroker(self)

    def target(self, namespace: str) -> Target | None:
        """The namespace's scope and effective pool, cached; None if no pool can serve it.

        A namespace without a scope yet gets a planned target (no scope id, the pool it would
        inherit): the recorder makes the scope before it records the answers given meanwhile,
        so no review waits for a write, and then caches the scope in its place.
        """
        cached = self._targets.get(namespace)
        now = time.monotonic()
        if (
            cached is not None
            and cached.generation == self._generation
            and (cached.scope_id is not None or now < self._planned_until.get(namespace, 0.0))
        ):
            return cached
        path = namespace_scope_path(self.cluster_scope, namespace)
        resolved = resolve_target(self.database, path, planned=True)
        if resolved is None:
            return None
        with self._lock:
            if resolved.generation > self._generation:
                self._invalidate(resolved.generation)
            if resolved.generation == self._generation:
                self._targets[namespace] = resolved
                if resolved.scope_id is None:  # made by someone else soon: look again then
                    self._planned_until[namespace] = now + PLANNED_TTL
        return resolved

    def held(self, target: Target, owner: Owner) -> dict[str, int]:
        """What the owner holds: stored, or answered by this process and not yet recorded."""
        # A planned target's scope does not exist: the read only checks the generation.
        scope_id = NO_SCOPE if target.scope_id is None else target.scope_id
        generation, stored = owner_snapshot(
            self.database, scope_id=scope_id, owner_kind=owner.kind, owner_name=owner.name
        )
        key = (target.scope_path, owner.kind, owner.name)
        with self._lock:
            if generation != self._generation or target.generation != generation:
                if generation > self._generation:
                    self._invalidate(generation)
                raise NeedsDatabase
            entry = self._ledger.get(key)
        if entry is not None:
            return {**stored, **entry.macs}
        return stored

    def answer(
        self, target: Target, owner: Owner, interfaces: Sequence[str], transaction: str | None
    ) -> dict[str, int] | None:
        """Hand out reserved MACs to the owner's interfaces; None when the reserve cannot."""
        now = time.monotonic()
        key = (target.scope_path, owner.kind, owner.name)
        with self._lock:
            if target.generation != self._generation or self._stopping.is_set():
                return None
            if self._pending and now - self._oldest_pending > RECORD_STALL:
                return None
            entry = self._ledger.get(key)
            if entry is not None:  # a concurrent identical review of this process answered
                if all(name in entry.macs for name in interfaces):
                    return {name: entry.macs[name] for name in interfaces}
                return None
            reserve = self._pools.get(target.pool_id)
            if reserve is None:
                if target.scope_id is None:
                    # Reservations live in a scope that exists: this review takes the write
                    # path, which makes the scope; the next one reads it and starts a reserve.
                    self._planned_until.pop(target.scope_path.rsplit("/", 1)[1], None)
                    return None
                reserve = self._pools[target.pool_id] = _PoolReserve(target)
            self._drop_stale()
            if len(reserve.free) < len(interfaces):
                self._want(reserve)
                return None
            taken = [reserve.free.popleft() for _ in interfaces]
            reserve.handed += len(taken)
            if len(reserve.free) < reserve.block // 2:
                self._want(reserve)
            expires = datetime.now(UTC) + timedelta(seconds=self.wait_time)
            macs = {}
            for name, reserved in zip(interfaces, taken, strict=True):
                macs[name] = reserved.mac
                self._pending.append(
                    Answer(
                        reserved.id,
                        reserved.mac,
                        target.scope_id,
                        owner.kind,
                        owner.name,
                        owner.uid,
                        name,
                        transaction,
                        expires,
                        target.pool_name,
                        target.scope_path,
                    )
                )
            if len(self._pending) == len(taken):
                self._oldest_pending = now
            self._ledger[key] = _Entry(macs)
        return macs

    def _drop_stale(self) -> None:
        """Queue for release the reserved MACs past their hand-out time (under the lock)."""
        now = datetime.now(UTC)
        for reserve in self._pools.values():
            while reserve.free and reserve.free[0].usable_until <= now:
                self._release.append(reserve.free.popleft().id)

    def _want(self, reserve: _PoolReserve) -> None:
        if not reserve.wanted:
            reserve.wanted = True
            self._wake.set()

    def _invalidate(self, generation: int) -> None:
        """The topology changed: forget resolved namespaces and give the reserves back."""
        self._generation = generation
        self._targets.clear()
        self._planned_until.clear()
        for reserve in self._pools.values():
            self._release.extend(reserved.id for reserved in reserve.free)
        self._pools.clear()
        self._wake.set()

    # --- the recorder --------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            if self._stopping.is_set() and self._pid == os.getpid():
                raise NeedsDatabase  # closed: reviews take the write path
            if self._pid != os.getpid():  # a forked worker: the parent's state is not ours
                self.__init__(  # type: ignore[misc]
                    self.database,
                    cluster_scope=self.cluster_scope,
                    wait_time=self.wait_time,
                    actor=self.actor,
                    record_interval=self.record_interval,
                )
            self._thread = threading.Thread(target=self._run, name="macpool-reserve", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.record_interval)
            self._wake.clear()
            if not self._work_waiting():
                continue
            try:
                # The writer turn first, then the record lock: the group commit's flush takes
                # them in the same order.
                with self.database.writer_turn():
                    self.record_now(take_turn=False, refill=True)
            except Exception:
                log.exception("recording reserved MACs failed; retrying")
                self._stopping.wait(min(1.0, self.record_interval * 10))

    def _work_waiting(self) -> bool:
        pools = list(self._pools.values())
        return bool(
            self._pending
            or self._release
            or any(r.wanted for r in pools)
            or time.monotonic() >= self._next_sweep
            or any(r.free and r.free[0].usable_until <= datetime.now(UTC) for r in pools)
        )

    def record_now(self, *, take_turn: bool, refill: bool = False) -> None:
        """Write the unrecorded answers (and with ``refill``, release and reserve blocks).

        ``take_turn=False``: the caller holds the writer turn already (the group commit).
        """
        with self._record_lock:
            with self._lock:
                if refill:
                    self._drop_stale()
                answers, self._pending = self._pending, []
                releases, self._release = (self._release, []) if refill else ([], self._release)
                wanted = [r for r in self._pools.values() if r.wanted] if refill else []
                generation = self._generation
            sweep = refill and time.monotonic() >= self._next_sweep
            if not (answers or releases or wanted or sweep):
                return
            try:
                reserved = self._write(answers, releases, wanted, sweep, take_turn=take_turn)
            except BaseException:
                with self._lock:
                    self._pending[:0] = answers
                    self._release.extend(releases)
                    self._made = {}  # rolled back with the rest
                raise
            self._settle(answers, reserved, generation)
            if sweep:
                self._next_sweep = time.monotonic() + SWEEP_INTERVAL

    def _write(
        self,
        answers: list[Answer],
        releases: list[int],
        wanted: list[_PoolReserve],
        sweep: bool,
        *,
        take_turn: bool,
    ) -> dict[int, list[Reserved]]:
        reserved: dict[int, list[Reserved]] = {}
        with self.database.session(write=True, take_turn=take_turn) as session:
            self._transact(session, answers, releases, wanted, sweep, reserved)
        return reserved

    def _transact(
        self,
        session: Session,
        answers: list[Answer],
        releases: list[int],
        wanted: list[_PoolReserve],
        sweep: bool,
        reserved: dict[int, list[Reserved]],
    ) -> None:
        refused = record_answers(session, self.actor, self._with_scopes(session, answers))
        for answer in refused:
            log.warning(
                "MAC %s answered to %s %s interface %s was not recorded: the interface holds "
                "another MAC (a concurrent answer); its reservation expires unless the object "
                "carries it",
                format_mac_int(answer.mac),
                answer.owner_kind,
                answer.owner_name,
                answer.interface,
            )
        release_reservations(session, self.actor, releases)
        if sweep:
            expire_reservations(session, self.actor)
        now = time.monotonic()
        for reserve in wanted:
            reserve.wanted = False
            if now < reserve.retry_at:
                continue
            reserve.block = block_size(reserve.handed, now - reserve.since, reserve.block)
            reserve.handed, reserve.since = 0, now
            count = reserve.block - len(reserve.free)
            if count <= 0:
                continue
            first = self._next_interface
            self._next_interface += count
            try:
                with session.begin_nested():
                    got = reserve_macs(
                        session,
                        self.actor,
                        target=reserve.target,
                        holder=self.holder,
                        first=first,
                        count=count,
                        ttl_seconds=reservation_ttl(self.wait_time),
                        keep_free=max(KEEP_FREE, 4 * count),
                    )
            except MacPoolError as exc:
                log.info("no MACs reserved ahead in pool '%s': %s", reserve.target.pool_name, exc)
                got = []
            if not got:
                reserve.retry_at = now + 5.0
            reserved[reserve.target.pool_id] = got

    def _with_scopes(self, session: Session, answers: list[Answer]) -> list[Answer]:
        """The answers, those given to a namespace without a scope then with the scope made
        now (or found, when another process or the ordinary path made it meanwhile)."""
        made = self._made
        ready = []
        for answer in answers:
            if answer.scope_id is None:
                if answer.scope_path not in made:
                    namespace = answer.scope_path.rsplit("/", 1)[1]
                    scope = namespace_scope(
                        session, self.actor, cluster_scope=self.cluster_scope, namespace=namespace
                    )
                    assert scope is not None
                    made[answer.scope_path] = scope.id
                answer = replace(answer, scope_id=made[answer.scope_path])
            ready.append(answer)
        return ready

    def _settle(
        self, answers: list[Answer], reserved: dict[int, list[Reserved]], generation: int
    ) -> None:
        now = time.monotonic()
        with self._lock:
            made, self._made = self._made, {}
            for namespace, cached in list(self._targets.items()):
                if cached.scope_id is None and cached.scope_path in made:
                    self._targets[namespace] = replace(cached, scope_id=made[cached.scope_path])
            for answer in answers:
                key = (answer.scope_path, answer.owner_kind, answer.owner_name)
                entry = self._ledger.get(key)
                if entry is not None and entry.recorded is None:
                    self._ledger[key] = _Entry(entry.macs, now)
                    self._recorded.append((now, key))
            while self._recorded and now - self._recorded[0][0] > LEDGER_TTL:
                _, key = self._recorded.popleft()
                entry = self._ledger.get(key)
                if entry is not None and entry.recorded and now - entry.recorded > LEDGER_TTL:
                    del self._ledger[key]
            for pool_id, got in reserved.items():
                reserve = self._pools.get(pool_id)
                if reserve is None or generation != self._generation:
                    self._release.extend(r.id for r in got)
                else:
                    reserve.free.extend(got)
            if self._pending:
                self._oldest_pending = now

    def close(self) -> None:
        """Record what was answered and give every unused reservation back (at shutdown)."""
        if self._thread is None or self._pid != os.getpid():
            return
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None  # a second close (atexit after close) is a no-op
        thread.join(timeout=5)
        with self._lock:
            for reserve in self._pools.values():
                self._release.extend(r.id for r in reserve.free)
            self._pools.clear()
        try:
            self.record_now(take_turn=True, refill=True)
        except (MacPoolError, DatabaseUnavailable) as exc:  # nothing is lost by stopping
            log.warning(
                "could not record answers or return reservations at shutdown (%s); the reconciler "
                "adopts answered MACs and unused reservations expire within the wait time",
                exc,
            )


class ReserveBroker:
    """The broker of one review on the fast path (raises NeedsDatabase to leave it)."""

    def __init__(self, reserved: ReservedMacs) -> None:
        self._reserved = reserved
        self._target: Target | None = None
        self._held: dict[str, int] = {}

    def held_macs(self, owner: Owner) -> dict[str, str]:
        if owner.migrated_from is not None:  # a hand-over: the kernel's write path decides
            raise NeedsDatabase
        self._target = self._reserved.target(owner.namespace)
        if self._target is None:
            raise NeedsDatabase
        self._held = self._reserved.held(self._target, owner)
        return {name: format_mac_int(mac) for name, mac in self._held.items()}

    def claim(
        self,
        owner: Owner,
        claims: Sequence[NicClaim],
        *,
        transaction: str | None,
        dry_run: bool,
    ) -> dict[str, str]:
        if dry_run or any(c.mac is not None for c in claims):
            raise NeedsDatabase
        names = [claim.interface for claim in claims]
        if not names:
            return {}
        if self._held:
            if all(name in self._held for name in names):  # a retry: same answer
                return {name: format_mac_int(self._held[name]) for name in names}
            raise NeedsDatabase
        if self._target is None:
            raise NeedsDatabase
        macs = self._reserved.answer(self._target, owner, names, transaction)
        if macs is None:
            raise NeedsDatabase
        return {name: format_mac_int(mac) for name, mac in macs.items()}

    def release(self, owner: Owner, interfaces: Sequence[str], *, dry_run: bool) -> None:
        raise NeedsDatabase


__all__ = ["RECORD_INTERVAL", "ReserveBroker", "ReservedMacs"]
