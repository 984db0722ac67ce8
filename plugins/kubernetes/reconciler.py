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
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, CoordinationV1Api
from sqlalchemy.orm import Session

from manager.config import Settings
from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse, MacPoolError, NotFound
from manager.core.mac import format_mac_int
from manager.db import Database
from manager.services import ensure_path, ensure_scope, get_scope, release_owner
from manager.services.allocations import AllocationRequest, allocate_macs, release_allocation
from manager.services.owners import (
    Holding,
    align_owner,
    expire_pending_in,
    owners_named_like,
    rename_owner,
    subtree_holdings,
)
from plugins.kubernetes.broker import OWNER_POD, OWNER_VM
from plugins.kubernetes.clusterstate import record_sync
from plugins.kubernetes.lease import LeaseElector
from plugins.kubernetes.objects import (
    Observed,
    is_placeholder,
    observe_pod,
    observe_vm,
    placeholder_prefix,
)
from plugins.kubernetes.patches import parse_transaction_timestamp
from plugins.kubernetes.scoping import OptMode, is_managed, parse_opt_mode
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

ACTOR = Actor("kubernetes", "reconciler")
KIND_OF = {VIRTUAL_MACHINES: OWNER_VM, PODS: OWNER_POD}
OBSERVE: dict[str, Callable[[Mapping[str, Any]], Observed]] = {
    OWNER_VM: observe_vm,
    OWNER_POD: observe_pod,
}


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


class Reconciler:
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
        page_size: int = 500,
        watch_timeout: int = 300,
        expire_interval: float | None = None,
        elector: LeaseElector | None = None,
        use_lease: bool = True,
    ) -> None:
        self.database = database
        self.settings = settings
        self.cluster_path = settings.k8s_cluster_scope
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if modes is None:  # as the rendered webhook selectors (MACPOOL_K8S_VM_MODE / _POD_MODE)
            modes = {
                OWNER_VM: parse_opt_mode(settings.k8s_vm_mode),
                OWNER_POD: parse_opt_mode(settings.k8s_pod_mode),
            }
        self.modes = dict(modes)
        self.batch_size = batch_size
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.expire_interval = expire_interval or settings.expire_interval
        self.functions = list_functions(api_client)
        self.elector = elector
        if elector is None and use_lease:
            self.elector = LeaseElector(
                CoordinationV1Api(api_client),
                namespace=settings.k8s_namespace,
                identity=self.identity,
            )
        self.queue: queue.Queue[Message] = queue.Queue()
        self.namespaces: dict[str, dict[str, str]] = {}
        self.objects: dict[str, dict[tuple[str, str], Observed]] = {OWNER_VM: {}, OWNER_POD: {}}
        self.refused: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.resource_versions: dict[str, str] = {}
        self.watchers: dict[str, Watcher] = {}
        self.synced = False
        self._scope_ids: dict[str, int] = {}
        self._refused_dirty = False
        self._renewed = 0.0

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Reconcile while holding the Lease, until ``stop`` is set."""
        last_expiry = time.monotonic()
        try:
            while not stop.is_set():
                if not self._lead():
                    self._stand_down()
                    stop.wait(self.elector.renew_interval if self.elector else 1.0)
                    continue
                if not self.synced:
                    self.sync()
                    self.start_watches()
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

    def _lead(self) -> bool:
        if self.elector is None:
            return True
        now = time.monotonic()
        if self.synced and now - self._renewed < self.elector.renew_interval:
            return True
        try:
            leading = self.elector.try_acquire()
        except Exception:
            log.warning("lease check failed", exc_info=True)
            leading = now - self._renewed < self.elector.duration_seconds / 2
        if leading:
            self._renewed = now
        return leading

    def _stand_down(self) -> None:
        """Stop acting (lease lost or shutdown): a new term starts with a full sync."""
        self.stop_watches()
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
        """Apply the events that arrive within ``timeout`` (one transaction); returns how many."""
        try:
            batch = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return 0
        while len(batch) < self.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        events = [m for m in batch if isinstance(m, WatchEvent)]
        self._in_batches(events, self._apply_event)
        for message in batch:
            if isinstance(message, Gone):
                self.relist(message.resource)
                self._start_watch(message.resource)
        return len(batch)

    # --- full and partial syncs ------------------------------------------------------------

    def sync(self) -> None:
        """List everything, align every managed object, release what is gone; mark synced."""
        started = time.monotonic()
        for resource in (NAMESPACES, VIRTUAL_MACHINES, PODS):
            self._list(resource)
        # Pods first, as KubeMacPool loads them: on a pod/VM clash the pod keeps the MAC.
        self._reconcile_kinds((OWNER_POD, OWNER_VM))
        self._save(synced=True)
        self.synced = True
        log.info(
            "initial sync of %d VMs and %d pods done in %.1f s",
            len(self.objects[OWNER_VM]),
            len(self.objects[OWNER_POD]),
            time.monotonic() - started,
        )

    def relist(self, resource: str) -> None:
        """List one resource again (after 410 Gone) and reconcile what changed meanwhile."""
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
        observe = OBSERVE[kind]
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
                elif _in_step(obs, mine):
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

    # --- applying --------------------------------------------------------------------------

    def _in_batches(self, items: list[Any], apply: Callable[[Session, Any], None]) -> None:
        for start in range(0, len(items), self.batch_size):
            try:
                with self.database.session(write=True) as session:
                    for item in items[start : start + self.batch_size]:
                        apply(session, item)
                    if self._refused_dirty:
                        self._save_in(session)
            except Exception:
                self._scope_ids.clear()  # ids of scopes created in the failed transaction
                raise

    def _register(self, items: list[Observed]) -> None:
        """Align owners that hold nothing yet (most of an initial sync), set-wise per batch.

        Such an owner's alignment is only "register every MAC it carries as allocated", which
        :func:`~manager.services.bulk_allocations.allocate_macs` does for a whole batch with a
        few statements. A batch the rules refuse anywhere (a MAC held elsewhere, a collision
        inside the batch) writes nothing and is redone owner by owner with :meth:`_align`, which
        records each refusal as a collision.
        """
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            try:
                with self.database.session(write=True) as session:
                    requests = [
                        AllocationRequest(
                            scope=self._namespace_scope(session, obs.namespace),
                            owner=Owner(obs.kind, obs.name, obs.uid),
                            interface=interface,
                            mac=format_mac_int(mac),
                        )
                        for obs in batch
                        for interface, mac in sorted(obs.macs.items())
                    ]
                    allocate_macs(session, ACTOR, requests)
                    for obs in batch:
                        self._set_refused(obs, {})
                    if self._refused_dirty:
                        self._save_in(session)
            except MacPoolError as exc:
                self._scope_ids.clear()  # ids of scopes created in the rolled-back transaction
                log.debug("batch registration refused (%s); aligning one by one", exc)
                self._in_batches(batch, self._align)
            except Exception:
                self._scope_ids.clear()
                raise

    def _apply_event(self, session: Session, event: WatchEvent) -> None:
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
        obs = OBSERVE[kind](event.object)
        if event.type == "DELETED":
            self.objects[kind].pop(obs.key, None)
            self._release(session, obs)
        else:
            self.objects[kind][obs.key] = obs
            self._align(session, obs)

    def _align(self, session: Session, obs: Observed) -> None:
        """Make one persisted object's allocations match it (see module docstring)."""
        if obs.deleting:
            self._release(session, obs)
            return
        if not self.managed(obs.kind, obs.namespace):
            return
        try:
            with session.begin_nested():
                scope = self._namespace_scope(session, obs.namespace)
                if obs.generate_name and obs.macs:
                    self._adopt(session, scope, obs)
                result = align_owner(
                    session,
                    ACTOR,
                    scope=scope,
                    owner=Owner(obs.kind, obs.name, obs.uid),
                    observed=obs.macs,
                    settled=_settled_by(obs),
                )
        except MacPoolError as exc:
            log.warning("cannot reconcile %s: %s", obs.describe(), exc)
            return
        self._set_refused(obs, result.refused)

    def _adopt(self, session: Session, scope: int, obs: Observed) -> None:
        """Move allocations made under an admission placeholder name to the object's name."""
        prefix = placeholder_prefix(obs.generate_name)
        found = owners_named_like(session, scope=scope, owner_kind=obs.kind, prefix=prefix)
        for name, allocations in found.items():
            if all(obs.macs.get(a.interface) == a.mac for a in allocations):
                try:
                    rename_owner(
                        session,
                        ACTOR,
                        scope=scope,
                        owner_kind=obs.kind,
                        old_name=name,
                        new_name=obs.name,
                        uid=obs.uid,
                    )
                except InterfaceInUse:
                    continue  # the real name already holds them: the placeholder expires
                return

    def _release(self, session: Session, obs: Observed) -> None:
        self._set_refused(obs, {})
        try:
            scope = get_scope(session, f"{self.cluster_path.rstrip('/')}/{obs.namespace}")
        except NotFound:
            return
        release_owner(
            session, ACTOR, scope=scope, owner_kind=obs.kind, owner_name=obs.name, reason="deleted"
        )

    def _release_holding(self, session: Session, holding: Holding) -> None:
        release_allocation(session, ACTOR, holding.id, reason="deleted")

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

    # --- helpers ---------------------------------------------------------------------------

    def managed(self, kind: str, namespace: str, labels: Mapping[str, str] | None = None) -> bool:
        """Whether objects of ``kind`` in ``namespace`` are MacPool's (opt modes, own ns)."""
        return is_managed(
            kind,
            self.namespaces.get(namespace) if labels is None else labels,
            namespace,
            own_namespace=self.settings.k8s_namespace,
            mode=self.modes.get(kind),
        )

    def _cluster_scope(self, session: Session) -> int:
        if "" not in self._scope_ids:
            try:
                scope = get_scope(session, self.cluster_path)
            except NotFound:
                levels = len([p for p in self.cluster_path.split("/") if p])
                kinds = ["datacenter"] * (levels - 1) + ["cluster"]
                scope = ensure_path(session, ACTOR, self.cluster_path, kinds=kinds)
            self._scope_ids[""] = scope.id
        return self._scope_ids[""]

    def _namespace_scope(self, session: Session, namespace: str) -> int:
        if namespace not in self._scope_ids:
            cluster = self._cluster_scope(session)
            scope = ensure_scope(session, ACTOR, parent=cluster, kind="namespace", name=namespace)
            self._scope_ids[namespace] = scope.id
        return self._scope_ids[namespace]

    def _set_refused(self, obs: Observed, refused: Mapping[str, Mapping[str, Any]]) -> None:
        key = (obs.kind, obs.namespace, obs.name)
        entries = [
            {
                "owner": obs.describe(),
                "interface": interface,
                "mac": str(details.get("mac")),
                "holders": list(details.get("holders") or []),
            }
            for interface, details in sorted(refused.items())
        ]
        if entries != self.refused.get(key, []):
            self._refused_dirty = True
            if entries:
                self.refused[key] = entries
            else:
                self.refused.pop(key, None)

    def _save(self, *, synced: bool = False) -> None:
        with self.database.session(write=True) as session:
            self._save_in(session, synced=synced)

    def _save_in(self, session: Session, *, synced: bool = False) -> None:
        refused = [entry for entries in self.refused.values() for entry in entries]
        record_sync(
            session,
            self.cluster_path,
            holder=self.identity,
            resource_versions=self.resource_versions,
            refused=refused,
            synced=synced,
        )
        self._refused_dirty = False


def _in_step(obs: Observed, held: list[Holding]) -> bool:
    """Whether the allocations already are exactly the object's MACs, all confirmed."""
    if len(held) != len(obs.macs):
        return False
    return all(h.state == "allocated" and obs.macs.get(h.interface) == h.mac for h in held)


def _settled_by(obs: Observed) -> Callable[[str | None], bool]:
    """Whether a pending allocation's stamp is covered by this persisted object (VMs only)."""
    if obs.kind != OWNER_VM:
        return lambda _stamp: True

    def settled(stamp: str | None) -> bool:
        if stamp is None:
            return True
        if obs.stamp_ns is None:
            return False
        try:
            return parse_transaction_timestamp(stamp) <= obs.stamp_ns
        except ValueError:
            return stamp == obs.stamp

    return settled


def load_api_client() -> ApiClient:
    """In-cluster configuration when running in a pod, else ``KUBECONFIG`` / ~/.kube/config."""
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


def run(
    settings: Settings, *, stop: threading.Event | None = None, api_client: ApiClient | None = None
) -> None:
    """Run the reconciler until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
    database = Database(settings.effective_database_url)
    try:
        Reconciler(database, settings, api_client or load_api_client()).run(stop)
    finally:
        database.dispose()


__all__ = ["ACTOR", "Reconciler", "load_api_client", "run"]
