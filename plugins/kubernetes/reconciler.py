"""The Kubernetes reconciler: keeps MacPool's allocations in step with the cluster's objects.

List + watch (official client) of Namespaces, ``kubevirt.io/v1`` VirtualMachines and Pods:

- the first full sync registers the MACs of existing VMs and Pods in managed namespaces as
  allocated; a MAC the rules refuse (held elsewhere, duplicates not allowed) is recorded as a
  collision, never forced in. ``cluster_states.synced_at`` is set afterwards (``/readyz``);
- a persisted object confirms the pending allocations its transaction stamp covers, releases
  allocations of interfaces it no longer has, and adopts allocations made under an admission
  placeholder name (``generateName`` objects);
- deleted objects release their MACs; stale pending allocations (past
  ``MACPOOL_K8S_WAIT_TIME``) are released and the owner realigned with what it really carries;
- watches resume from the last resourceVersion; a 410 Gone relists that resource;
- only the holder of the ``coordination.k8s.io`` Lease acts (one per cluster).

Database work is done by one thread, in batches of events per write transaction; the watch
threads only read the API server.

This module is the loop: the Lease, the watches, the syncs and the batching of events. The
per-object database steps are :class:`~plugins.kubernetes.alignment.Aligner`'s; the process
entry (:func:`run`, :func:`load_api_client`) is in :mod:`plugins.kubernetes.reconciler_process`
and re-exported here.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException
from sqlalchemy.orm import Session

from manager.config import Settings
from manager.core.collector import collector_paused, freeze_survivors
from manager.services import Database, Holding, expire_pending_in, subtree_holdings
from plugins.kubernetes.alignment import ACTOR, Aligner, in_step
from plugins.kubernetes.broker import OWNER_POD, OWNER_VM, MigrationLabels
from plugins.kubernetes.health import clear_problem, report_problem
from plugins.kubernetes.lease import LEASE_NAME, LeaseElector
from plugins.kubernetes.objects import Observed, is_placeholder, observe_pod, observe_vm
from plugins.kubernetes.reconciler_process import load_api_client, run
from plugins.kubernetes.scoping import OptMode
from plugins.kubernetes.settings import KubernetesSettings
from plugins.kubernetes.sources import (
    NAMESPACES,
    PODS,
    VIRTUAL_MACHINES,
    Gone,
    Message,
    Watcher,
    WatchEvent,
    list_all,
    list_functions,
)

log = logging.getLogger(__name__)

KIND_OF = {VIRTUAL_MACHINES: OWNER_VM, PODS: OWNER_POD}
#: How long an object carrying MACs its webhook answered from the reserve may wait for the
#: answer's recording (recorded within 0.1 s; a webhook stops answering from the reserve when
#: its records stall for 0.5 s), looked at again every RECHECK seconds; after that the MACs
#: are taken over from the reservations (the webhook process died before recording them).
UNRECORDED_WAIT = 1.0
RECHECK = 0.15
#: How long (seconds) the reconciler gathers the events that follow a first one into one batch.
#: Nobody waits for a confirmation (the webhook's answer already holds the MACs), so waiting a
#: little costs nothing, while a batch per event costs a transaction per VM; by then the
#: webhook has recorded most answers it gave (within 0.1 s), so fewer objects wait for a recheck.
GATHER = 0.2


def _status_document(exc: ApiException) -> dict[str, Any]:
    try:
        document = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _brief(exc: ApiException) -> str:
    """The API server's one-line message for a failed call."""
    message = _status_document(exc).get("message")
    return f"{exc.status} {message or exc.reason}"


def blocking_problem(exc: ApiException, *, namespace: str) -> str | None:
    """A one-line description of an API answer that retrying alone will not fix (a missing
    namespace or resource, RBAC, refused credentials); ``None`` for anything else."""
    document = _status_document(exc)
    message = str(document.get("message") or exc.reason or "")
    details = document.get("details") or {}
    if exc.status == 401:
        return "the API server refuses MacPool's credentials (401 Unauthorized)"
    if exc.status == 403:
        return f"forbidden by RBAC (check MacPool's ClusterRole and Role bindings): {message}"
    if exc.status == 404 and details.get("kind") == "namespaces":
        return (
            f"namespace '{details.get('name') or namespace}' does not exist: create it (the "
            f"Lease {LEASE_NAME} lives there) or set MACPOOL_K8S_NAMESPACE"
        )
    if exc.status == 404:
        return f"the API server does not serve a resource MacPool follows: {message}"
    return None


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


class Reconciler(Aligner):
    """One cluster's reconciler; :meth:`run` is the loop, the other methods are its steps."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        api_client: ApiClient,
        *,
        identity: str | None = None,
        modes: Mapping[str, OptMode] | None = None,
        batch_size: int = 500,
        gather: float = GATHER,
        page_size: int = 500,
        watch_timeout: int = 300,
        expire_interval: float | None = None,
        elector: LeaseElector | None = None,
        use_lease: bool = True,
        freeze: bool = False,
    ) -> None:
        super().__init__(database, settings, identity=identity, modes=modes, batch_size=batch_size)
        #: After a full sync or relist, move what it built (and everything loaded before) out
        #: of the cyclic collector's sight (a process-wide step: the reconciler's own process
        #: takes it, not a caller that embeds a reconciler).
        self.freeze = freeze
        self.page_size = page_size
        self.gather = gather
        self.watch_timeout = watch_timeout
        self.expire_interval = expire_interval or settings.expire_interval
        self.functions = list_functions(api_client)
        self.elector = elector
        if elector is None and use_lease:
            self.elector = LeaseElector(
                CoordinationV1Api(api_client),
                namespace=KubernetesSettings.of(settings).k8s_namespace,
                identity=self.identity,
            )
        self.queue: queue.Queue[Message] = queue.Queue()
        self.objects: dict[str, dict[tuple[str, str], Observed]] = {OWNER_VM: {}, OWNER_POD: {}}
        labels = MigrationLabels.parse(KubernetesSettings.of(settings).k8s_migration_labels)
        self.observe: dict[str, Callable[[Mapping[str, Any]], Observed]] = {
            OWNER_VM: functools.partial(observe_vm, labels=labels),
            OWNER_POD: observe_pod,
        }
        self.watchers: dict[str, Watcher] = {}
        #: Objects waiting for their webhook answer's recording: (kind, key) → first seen.
        self.waiting: dict[tuple[str, tuple[str, str]], float] = {}
        self._recheck_at = 0.0
        self.synced = False
        #: Why the reconciler cannot work right now (namespace, RBAC, credentials), if it cannot.
        self.problem: str | None = None
        self._renewed = 0.0
        self._leading = False
        self._standing_by: str | None = None

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Reconcile while holding the Lease, until ``stop`` is set."""
        last_expiry = time.monotonic()
        clear_problem(self.settings)  # whatever an earlier run reported is stale now
        try:
            while not stop.is_set():
                try:
                    leading = self._lead()
                    if leading and not self.synced:
                        self.sync()
                        self.start_watches()
                except ApiException as exc:
                    problem = blocking_problem(
                        exc, namespace=KubernetesSettings.of(self.settings).k8s_namespace
                    )
                    if problem is None:
                        raise
                    self._blocked(problem)
                    self._stand_down()
                    stop.wait(self.retry_interval)
                    continue
                self._unblocked()
                if not leading:
                    self._stand_down()
                    stop.wait(self.retry_interval)
                    continue
                self.pump(timeout=0.5)
                if time.monotonic() - last_expiry >= self.expire_interval:
                    self.expire()
                    last_expiry = time.monotonic()
        finally:
            self._stand_down()
            if self.elector is not None:
                try:
                    self.elector.release()
                except Exception:  # shutting down: the Lease expires on its own anyway
                    log.warning("could not release the lease", exc_info=True)

    @property
    def retry_interval(self) -> float:
        """Pause between tries while not leading or blocked."""
        return self.elector.renew_interval if self.elector else 1.0

    def _blocked(self, problem: str) -> None:
        """Say once (log and ``/readyz``) why the reconciler cannot work; quiet while it lasts."""
        if problem == self.problem:
            return
        self.problem = problem
        log.error(
            "reconciler cannot work: %s (retrying every %.3g s)", problem, self.retry_interval
        )
        report_problem(self.settings, problem)

    def _unblocked(self) -> None:
        if self.problem is None:
            return
        log.info("reconciler can work again (was: %s)", self.problem)
        self.problem = None
        clear_problem(self.settings)

    def _lead(self) -> bool:
        if self.elector is None:
            return True
        now = time.monotonic()
        if self.synced and now - self._renewed < self.elector.renew_interval:
            return True
        try:
            leading = self.elector.try_acquire()
        except ApiException as exc:
            if (
                blocking_problem(exc, namespace=KubernetesSettings.of(self.settings).k8s_namespace)
                is not None
            ):
                raise  # the loop reports it once and retries quietly
            log.warning("lease check failed: %s", _brief(exc))
            leading = now - self._renewed < self.elector.duration_seconds / 2
        except Exception:
            log.warning("lease check failed", exc_info=True)
            leading = now - self._renewed < self.elector.duration_seconds / 2
        if leading:
            self._renewed = now
        self._say_term(leading)
        return leading

    def _say_term(self, leading: bool) -> None:
        """Log when this reconciler starts or stops leading, and who it stands by for."""
        assert self.elector is not None
        elector = self.elector
        where = f"{elector.namespace}/{elector.name}"
        if leading and not self._leading:
            log.info("holding the Lease %s as %s: reconciling", where, elector.identity)
        elif not leading and self._leading:
            log.warning("lost the Lease %s (held by %r now): standing by", where, elector.holder)
        elif not leading and elector.holder != self._standing_by:
            log.info(
                "standing by: the Lease %s is held by %r (taken over once it expires, %d s "
                "after its last renewal)",
                where,
                elector.holder,
                elector.duration_seconds,
            )
        self._leading = leading
        self._standing_by = None if leading else elector.holder

    def _stand_down(self) -> None:
        """Stop acting (lease lost or shutdown): a new term starts with a full sync."""
        self.stop_watches()
        self.waiting.clear()  # the full sync of a new term looks at every object
        self.synced = False

    def start_watches(self) -> None:
        """Watch every resource from the version its last list returned."""
        for resource in (NAMESPACES, VIRTUAL_MACHINES, PODS):
            self._start_watch(resource)

    def _start_watch(self, resource: str) -> None:
        watcher = Watcher(
            resource,
            self.functions[resource],
            resource_version=self.resource_versions[resource],
            sink=self.queue,
            timeout_seconds=self.watch_timeout,
        )
        self.watchers[resource] = watcher
        watcher.start()

    def stop_watches(self) -> None:
        """End every watch thread."""
        for watcher in self.watchers.values():
            watcher.stop()
        for watcher in self.watchers.values():
            watcher.join(timeout=5)
        self.watchers.clear()
        self.queue = queue.Queue()

    def pump(self, *, timeout: float) -> int:
        """Apply the events that arrive within ``timeout``, with those that follow the first
        within :attr:`gather` seconds (one transaction); returns how many.

        Objects waiting for their webhook answer's recording are looked at again meanwhile.
        """
        if self.waiting:
            timeout = max(0.0, min(timeout, self._recheck_at - time.monotonic()))
        try:
            batch = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            self._recheck()
            return 0
        until = time.monotonic() + self.gather
        while len(batch) < self.batch_size:
            left = until - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        events = [m for m in batch if isinstance(m, WatchEvent)]
        if events:
            self._apply_events(events)
        self._recheck()
        for message in batch:
            if isinstance(message, Gone):
                self.relist(message.resource)
                self._start_watch(message.resource)
        return len(batch)

    # --- full and partial syncs ------------------------------------------------------------

    def sync(self) -> None:
        """List everything, align every managed object, release what is gone; mark synced."""
        started = time.monotonic()
        with collector_paused():
            for resource in (NAMESPACES, VIRTUAL_MACHINES, PODS):
                self._list(resource)
            # Pods first, as KubeMacPool loads them: on a pod/VM clash the pod keeps the MAC.
            self._reconcile_kinds((OWNER_POD, OWNER_VM))
            self._save(synced=True)
        if self.freeze:
            freeze_survivors()
        self.synced = True
        log.info(
            "initial sync of %d VMs and %d pods done in %.1f s",
            len(self.objects[OWNER_VM]),
            len(self.objects[OWNER_POD]),
            time.monotonic() - started,
        )

    def relist(self, resource: str) -> None:
        """List one resource again (after 410 Gone) and reconcile what changed meanwhile."""
        with collector_paused():
            self._relist(resource)
        if self.freeze:
            freeze_survivors()

    def _relist(self, resource: str) -> None:
        before = dict(self.namespaces)
        self._list(resource)
        if resource == NAMESPACES:
            newly = {
                (name, kind)
                for name in self.namespaces
                for kind in self._became_managed(name, before)
            }
            for kind in (OWNER_VM, OWNER_POD):
                todo = [o for o in self.objects[kind].values() if (o.namespace, kind) in newly]
                self._in_batches(todo, self._align)
        else:
            self._reconcile_kinds((KIND_OF[resource],))
        self._save()

    def _became_managed(self, name: str, before: Mapping[str, dict[str, str]]) -> list[str]:
        """Owner kinds a namespace's current labels manage and its ``before`` labels did not."""
        return [
            kind
            for kind in (OWNER_VM, OWNER_POD)
            if self.managed(kind, name) and not self.managed(kind, name, before.get(name, {}))
        ]

    def _list(self, resource: str) -> None:
        items, version = list_all(self.functions[resource], page_size=self.page_size)
        self.resource_versions[resource] = version
        if resource == NAMESPACES:
            self.namespaces = {o["metadata"]["name"]: _labels(o) for o in items}
            return
        kind = KIND_OF[resource]
        observe = self.observe[kind]
        observed = (observe(item) for item in items)
        self.objects[kind] = {o.key: o for o in observed}

    def _reconcile_kinds(self, kinds: Iterable[str]) -> None:
        kinds = tuple(kinds)
        with self.database.session(write=True) as session:
            cluster = self._cluster_scope(session)
            holdings = subtree_holdings(session, scope=cluster, owner_kinds=kinds)
        held: dict[tuple[str, str, str], list[Holding]] = defaultdict(list)
        for holding in holdings:
            held[(holding.owner_kind, holding.scope_name, holding.owner_name)].append(holding)
        for kind in kinds:  # kind by kind, in the order given
            todo: list[Observed] = []
            fresh: list[Observed] = []
            for obs in self.objects[kind].values():
                mine = held.pop((kind, obs.namespace, obs.name), [])
                if obs.deleting:
                    if mine:
                        todo.append(obs)
                elif not self.managed(kind, obs.namespace):
                    continue
                elif in_step(obs, mine):
                    self._set_refused(obs, {})
                elif not mine and not obs.generate_name:
                    fresh.append(obs)
                else:
                    todo.append(obs)
            # Owners whose allocations change first: what they release, a fresh owner may carry.
            self._in_batches(todo, self._align)
            self._register(fresh)
        # Owners nobody carries any more; pending ones may be creations still in flight.
        stale = [
            h
            for (_, _, name), rows in held.items()
            if not is_placeholder(name)
            for h in rows
            if h.state == "allocated"
        ]
        self._in_batches(stale, self._release_holding)
        for key in [k for k in self.refused if k[0] in kinds]:
            if (key[1], key[2]) not in self.objects[key[0]]:
                self.refused.pop(key)
                self._refused_dirty = True

    # --- events and expiry -----------------------------------------------------------------

    def _apply_events(self, events: list[WatchEvent]) -> None:
        """Apply a batch of events: those of objects already in step need no write at all,
        those that only need confirming are confirmed set-wise (:meth:`_settle_plan`), then
        every other event is applied in order, all in one write transaction.

        Set-wise only when no namespace changes in the batch and the object has no other event
        in it: confirming what an object already holds then commutes with the other events.
        """
        if any(event.resource == NAMESPACES for event in events):

            def each(session: Session) -> None:
                for event in events:
                    self._apply_event(session, event)

            self._in_transaction(each)
            return
        observed = [self.observe[KIND_OF[event.resource]](event.object) for event in events]
        seen = Counter((obs.kind, obs.key) for obs in observed)
        quick = [
            i
            for i, (event, obs) in enumerate(zip(events, observed, strict=True))
            if event.type != "DELETED" and seen[(obs.kind, obs.key)] == 1
        ]
        plan = self._settle_plan([observed[i] for i in quick], wait=True)
        quiet, confirm, wait = (
            {quick[j] for j in part} for part in (plan.quiet, plan.confirm, plan.later)
        )
        now = time.monotonic()
        rest: list[int] = []
        for i, obs in enumerate(observed):
            key = (obs.kind, obs.key)
            if i in wait:
                self.objects[obs.kind][obs.key] = obs
                if not self.waiting:
                    self._recheck_at = now + RECHECK
                self.waiting.setdefault(key, now)
                continue
            self.waiting.pop(key, None)
            if i in quiet:
                self.objects[obs.kind][obs.key] = obs
                self._set_refused(obs, {})
            else:
                rest.append(i)
        if not rest and not self._refused_dirty:
            return

        def write(session: Session) -> None:
            confirmed = self._settle_write(session, plan)
            for i in rest:
                obs = observed[i]
                if confirmed and i in confirm:
                    self.objects[obs.kind][obs.key] = obs
                    self._set_refused(obs, {})
                else:
                    self._apply_event(session, events[i], obs)

        self._in_transaction(write)

    def _recheck(self) -> None:
        """Look again at the objects waiting for their answer's recording: confirmed if
        recorded meanwhile, aligned (taking the reservations over) once they waited
        :data:`UNRECORDED_WAIT`."""
        for key in [k for k in self.waiting if k[1] not in self.objects[k[0]]]:
            del self.waiting[key]  # deleted meanwhile
        now = time.monotonic()
        if not self.waiting or now < self._recheck_at:
            return  # all of them at once, every RECHECK seconds: not at every event
        self._recheck_at = now + RECHECK
        keys = list(self.waiting)
        observed = [self.objects[kind][key] for kind, key in keys]
        plan = self._settle_plan(observed, wait=True)
        todo: list[int] = []
        for i, key in enumerate(keys):
            if i in plan.quiet:
                del self.waiting[key]
                self._set_refused(observed[i], {})
            elif i in plan.later and now - self.waiting[key] < UNRECORDED_WAIT:
                continue
            else:
                del self.waiting[key]
                todo.append(i)
        if not todo and not self._refused_dirty:
            return

        def write(session: Session) -> None:
            confirmed = self._settle_write(session, plan)
            for i in todo:
                if confirmed and i in plan.confirm:
                    self._set_refused(observed[i], {})
                else:
                    self._align(session, observed[i])

        self._in_transaction(write)

    def _apply_event(
        self, session: Session, event: WatchEvent, obs: Observed | None = None
    ) -> None:
        if event.resource == NAMESPACES:
            name = event.object["metadata"]["name"]
            before = {name: self.namespaces[name]} if name in self.namespaces else {}
            if event.type == "DELETED":
                self.namespaces.pop(name, None)
                return
            self.namespaces[name] = _labels(event.object)
            for kind in self._became_managed(name, before):
                for obs in [o for o in self.objects[kind].values() if o.namespace == name]:
                    self._align(session, obs)
            return
        kind = KIND_OF[event.resource]
        if obs is None:
            obs = self.observe[kind](event.object)
        if event.type == "DELETED":
            self.waiting.pop((kind, obs.key), None)
            self.objects[kind].pop(obs.key, None)
            self._release(session, obs)
        else:
            self.objects[kind][obs.key] = obs
            self._align(session, obs)

    def expire(self, *, now: datetime | None = None) -> int:
        """Release stale pending allocations, then realign their owners that still exist."""
        with self.database.session(write=True) as session:
            cluster = self._cluster_scope(session)
            expired = expire_pending_in(session, ACTOR, scope=cluster, now=now or datetime.now(UTC))
            owners = {(h.owner_kind, h.scope_name, h.owner_name) for h in expired}
            for kind, namespace, name in sorted(owners):
                obs = self.objects.get(kind, {}).get((namespace, name))
                if obs is not None:
                    self._align(session, obs)
        return len(expired)


__all__ = ["ACTOR", "Reconciler", "blocking_problem", "load_api_client", "run"]
