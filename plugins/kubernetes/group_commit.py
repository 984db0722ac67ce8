"""Group commit: the admission reviews that arrive together share one write transaction.

Each review that changes MACs is a short write transaction, and on SQLite only one runs at a
time. Its fixed costs (waiting for the writer turn, opening the session, ``BEGIN IMMEDIATE``,
resolving the namespace scope, ``COMMIT``) were most of a review's time, so under load the
webhook spent its single writer on overhead. :class:`GroupCommit` lets the reviews that queue
up while one transaction runs go through the next one together:

- a review first runs without a database (:class:`NeedsDatabase` stops it at its first broker
  call); most pods never need one and never queue. VM CREATE and UPDATE reviews always read
  their owner's allocations first, so the server queues them straight away;
- the others queue. The first thread to find no leader leads: it takes the writer turn, then
  every queued review (those that arrived while it waited included), runs them in one session
  with a shared scope cache, plans their automatic MACs in one
  :class:`~manager.services.bulk_allocations.AllocationPlan` (requested MACs and releases go
  through the services at once), writes the plan and commits once when every one was admitted;
  a batch of one is the same transaction with one review in it;
- a refusal or an error anywhere in the batch rolls the whole batch back (undoing the index
  advances first) and each review is run again alone in its own transaction, so a refusal
  never costs another review anything but time, and nothing stored depends on its neighbours;
- dry runs always run alone, through the same code, and are rolled back;
- when its own review is done the leader hands the lead to the oldest queued review's thread.

Every review's answer is computed inside the transaction that stores it, so an allowed review
is answered only after its allocations are committed, exactly as without batching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.orm import Session

from manager.services import AllocationPlan, Database, Scope
from plugins.kubernetes.broker import MacBroker
from plugins.kubernetes.review import AdmissionRequest, AdmissionResult
from plugins.kubernetes.service_broker import WEBHOOK_ACTOR, Reviewer, ServiceBroker

#: At most this many reviews share one transaction (bounds how long the writer is held).
MAX_BATCH: Final = 64


class NeedsDatabase(BaseException):
    """Stops a review at its first database access (a BaseException: no handler in the
    admission logic may take it for a refusal)."""


def _no_database() -> Session:
    raise NeedsDatabase


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Job:
    """One queued review and, once run, its outcome."""

    reviewer: Reviewer
    request: AdmissionRequest
    lead: bool = False
    done: bool = False
    result: AdmissionResult | None = None
    error: BaseException | None = None
    #: Released once per signal (outcome known, or lead handed over): a plain lock wakes a
    #: thread for a fraction of an Event's cost, which showed in the webhook's profile.
    _signal: threading.Lock = field(default_factory=_taken_lock)

    def settle(self, result: AdmissionResult | None, error: BaseException | None) -> None:
        self.result, self.error = result, error

    def wake(self) -> None:
        self._signal.release()

    def wait(self) -> None:
        self._signal.acquire()

    def outcome(self) -> AdmissionResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class GroupCommit:
    """Runs admission reviews of one process, batching their write transactions."""

    def __init__(
        self,
        database: Database,
        *,
        cluster_scope: str,
        wait_time: int,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
        before_batch: Callable[[], None] | None = None,
        on_path: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.cluster_scope = cluster_scope
        self.wait_time = wait_time
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leading = False
        #: Hears the size of every batch (the webhook's metrics).
        self._on_batch = on_batch
        #: Runs in the writer turn before every batch (writes the answers given from MACs
        #: reserved ahead, so the batch sees them).
        self._before_batch = before_batch
        #: Hears how each review was answered: "reserved" (from MACs reserved ahead),
        #: "no_database" or "transaction" (the webhook's metrics).
        self._on_path = on_path or (lambda path: None)

    def review(
        self,
        reviewer: Reviewer,
        request: AdmissionRequest,
        *,
        first_without_database: bool = True,
        fast: Callable[[], MacBroker] | None = None,
    ) -> AdmissionResult:
        """The review's answer; allowed changes are committed before it returns.

        ``first_without_database=False`` skips the first run without a database, for reviews
        that always need one (a VM review reads what its owner holds before anything else).
        ``fast`` gives a broker that answers without a write transaction where it can (MACs
        reserved ahead) and raises NeedsDatabase where it cannot.
        """
        result = self.quick(
            reviewer, request, first_without_database=first_without_database, fast=fast
        )
        return result if result is not None else self.transact(reviewer, request)

    def quick(
        self,
        reviewer: Reviewer,
        request: AdmissionRequest,
        *,
        first_without_database: bool = True,
        fast: Callable[[], MacBroker] | None = None,
    ) -> AdmissionResult | None:
        """The review's answer where it needs no write transaction (and never waits for
        one), else ``None``: then :meth:`transact` answers it. The arguments are those of
        :meth:`review`."""
        if fast is not None and not request.dry_run:
            try:
                result = reviewer(request, broker=fast())
            except NeedsDatabase:
                pass
            else:
                self._on_path("reserved")
                return result
        if first_without_database:
            try:
                result = reviewer(request, broker=self._broker(_no_database))
            except NeedsDatabase:
                pass
            else:
                self._on_path("no_database")
                return result
        return None

    def transact(self, reviewer: Reviewer, request: AdmissionRequest) -> AdmissionResult:
        """The review's answer from a write transaction, shared with the reviews queued
        meanwhile; allowed changes are committed before it returns."""
        self._on_path("transaction")
        job = _Job(reviewer, request)
        if request.dry_run:
            with self.database.writer_turn():
                if self._before_batch is not None:
                    self._before_batch()
                self._transact([job], commit=False)
            return job.outcome()
        with self._lock:
            self._queue.append(job)
            if not self._leading:
                self._leading = job.lead = True
        while not job.lead:
            job.wait()
            if job.done:
                return job.outcome()
        self._lead(job)
        return job.outcome()

    def _broker(
        self,
        open_session: Callable[[], Session],
        scopes: dict[str, tuple[Scope, int]] | None = None,
        plan: AllocationPlan | None = None,
    ) -> ServiceBroker:
        return ServiceBroker(
            open_session,
            cluster_scope=self.cluster_scope,
            wait_time=self.wait_time,
            scopes=scopes,
            plan=plan,
        )

    def _lead(self, own: _Job) -> None:
        """Run batches until this thread's own review is done, then pass the lead on.

        The batch's threads are woken after the writer turn is released (another process's
        batch can start meanwhile), and after the lead is passed on.
        """
        batch: list[_Job] = []
        try:
            while not own.done:
                with self.database.writer_turn():
                    if self._before_batch is not None:
                        self._before_batch()
                    with self._lock:
                        batch = self._queue[: self.max_batch]
                        del self._queue[: self.max_batch]
                    self._run(batch)
                for job in batch:
                    job.done = True
                if not own.done:
                    self._wake(batch, own)
                    batch = []
        except BaseException as exc:  # the leader's review fails: nobody may wait forever
            with self._lock:
                if own in self._queue:  # not taken yet (the writer turn failed): withdraw it
                    self._queue.remove(own)
            for job in batch:
                if not job.done:
                    job.settle(None, exc)
                    job.done = True
            raise
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake()
                else:
                    self._leading = False
            self._wake(batch, own)

    @staticmethod
    def _wake(batch: list[_Job], own: _Job) -> None:
        for job in batch:
            if job is not own:
                job.wake()

    def _run(self, batch: list[_Job]) -> None:
        """Run a batch in one transaction; alone, one by one, if any review is not admitted."""
        if self._on_batch is not None:
            self._on_batch(len(batch))
        if len(batch) > 1 and self._transact(batch):
            return
        for job in batch:
            self._transact([job])

    def _transact(self, jobs: list[_Job], *, commit: bool = True) -> bool:
        """Run the reviews in one transaction; commit it when every one was admitted.

        Whether it was committed. The outcomes are settled when it was, and always for a single
        review (its refusal or error is its answer); ``commit=False`` (a dry run) rolls back
        what the review did and settles its answer.
        """
        alone = len(jobs) == 1
        session = self._session()
        plan = AllocationPlan(session, WEBHOOK_ACTOR)
        scopes: dict[str, tuple[Scope, int]] = {}
        results: list[AdmissionResult] = []
        try:
            for job in jobs:
                result = job.reviewer(
                    job.request, broker=self._broker(lambda: session, scopes, plan)
                )
                if not result.allowed or not commit:
                    if alone:
                        job.settle(result, None)
                    self._abandon(session, plan)
                    return False
                results.append(result)
            plan.write()
            session.commit()
        except Exception as exc:
            if alone:
                jobs[0].settle(None, exc)
            self._abandon(session, plan)
            return False
        finally:
            session.close()
        for job, result in zip(jobs, results, strict=True):
            job.settle(result, None)
        return True

    @staticmethod
    def _abandon(session: Session, plan: AllocationPlan) -> None:
        """Roll a batch back, its planned MACs out of the indexes first (the rollback takes
        the written ones out)."""
        plan.undo()
        session.rollback()

    def _session(self) -> Session:
        return self.database.new_session(write=True)


__all__ = ["MAX_BATCH", "GroupCommit", "NeedsDatabase"]
