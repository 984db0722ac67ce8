"""Aligning MacPool's allocations with the Kubernetes objects the reconciler observes.

:class:`Aligner` is the database side of reconciling one cluster: the per-object steps, each
inside a write transaction, and what is recorded about the cluster in ``cluster_states``:

- a persisted object confirms the pending allocations its transaction stamp covers, releases
  allocations of interfaces it no longer has, and adopts allocations made under an admission
  placeholder name (``generateName`` objects);
- owners that hold nothing yet are registered set-wise per batch; a MAC the rules refuse (held
  elsewhere, duplicates not allowed) is recorded as a collision, never forced in;
- deleted objects release their MACs.

It reads no API server: :class:`~plugins.kubernetes.reconciler.Reconciler` lists and watches
the cluster and feeds it.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from manager.config import Settings
from manager.core.actor import Actor, Owner
from manager.core.errors import InterfaceInUse, MacPoolError, NotFound
from manager.core.mac import MacAddress
from manager.services import (
    AllocationRequest,
    Database,
    Handover,
    Holding,
    align_owner,
    allocate_macs,
    complete_handovers,
    confirm_holdings,
    ensure_path,
    ensure_scope,
    get_scope,
    owners_holdings,
    owners_named_like,
    release_allocation,
    release_owner,
    rename_owner,
    reservation_held,
)
from plugins.kubernetes.broker import OWNER_POD, OWNER_VM
from plugins.kubernetes.clusterstate import record_sync
from plugins.kubernetes.objects import Observed, placeholder_prefix
from plugins.kubernetes.patches import parse_transaction_timestamp
from plugins.kubernetes.scoping import (
    OptMode,
    is_managed,
    namespace_scope_path,
    parse_opt_mode,
)
from plugins.kubernetes.settings import KubernetesSettings

# The reconciler's messages, wherever their step lives, keep the reconciler's logger.
log = logging.getLogger("plugins.kubernetes.reconciler")

ACTOR = Actor("kubernetes", "reconciler")


class Aligner:
    """The database side of one cluster's reconciler: per-object steps, scopes, collisions."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        identity: str | None = None,
        modes: Mapping[str, OptMode] | None = None,
        batch_size: int = 500,
    ) -> None:
        self.database = database
        self.settings = settings
        self.cluster_path = KubernetesSettings.of(settings).k8s_cluster_scope
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if modes is None:  # as the rendered webhook selectors (MACPOOL_K8S_VM_MODE / _POD_MODE)
            modes = {
                OWNER_VM: parse_opt_mode(KubernetesSettings.of(settings).k8s_vm_mode),
                OWNER_POD: parse_opt_mode(KubernetesSettings.of(settings).k8s_pod_mode),
            }
        self.modes = dict(modes)
        self.batch_size = batch_size
        self.namespaces: dict[str, dict[str, str]] = {}
        self.refused: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.resource_versions: dict[str, str] = {}
        self._scope_ids: dict[str, int] = {}
        self._refused_dirty = False

    def managed(self, kind: str, namespace: str, labels: Mapping[str, str] | None = None) -> bool:
        """Whether objects of ``kind`` in ``namespace`` are MacPool's (opt modes, own ns)."""
        return is_managed(
            kind,
            self.namespaces.get(namespace) if labels is None else labels,
            namespace,
            own_namespace=KubernetesSettings.of(self.settings).k8s_namespace,
            mode=self.modes.get(kind),
        )

    # --- applying, one transaction per batch -----------------------------------------------

    def _in_batches(self, items: list[Any], apply: Callable[[Session, Any], None]) -> None:
        def each(session: Session, batch: list[Any]) -> None:
            for item in batch:
                apply(session, item)

        self._in_chunks(items, each)

    def _in_chunks(self, items: list[Any], apply: Callable[[Session, list[Any]], None]) -> None:
        """Apply to ``batch_size`` items at a time, each batch in one write transaction."""
        for start in range(0, len(items), self.batch_size):
            self._in_transaction(
                functools.partial(_on_batch, apply, items[start : start + self.batch_size])
            )

    def _in_transaction(self, apply: Callable[[Session], None]) -> None:
        """One write transaction; the collisions recorded with it when they changed."""
        try:
            with self.database.session(write=True) as session:
                apply(session)
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
                            mac=MacAddress(mac),
                            handover=_handover(obs),
                            adopt_reserved=True,
                        )
                        for obs in batch
                        for interface, mac in sorted(obs.macs.items())
                    ]
                    # Nobody held these owners at the listing: no identity lookup (a holder
                    # that appeared since fails the insert and the batch is redone one by one).
                    allocate_macs(session, ACTOR, requests, results=False, unheld=True)
                    for obs in batch:
                        self._set_refused(obs, {})
                        self._finish_migration(session, obs)
                    if self._refused_dirty:
                        self._save_in(session)
            except MacPoolError as exc:
                self._scope_ids.clear()  # ids of scopes created in the rolled-back transaction
                log.debug("batch registration refused (%s); aligning one by one", exc)
                self._in_batches(batch, self._align)
            except Exception:
                self._scope_ids.clear()
                raise

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
                    handover=_handover(obs),
                )
                self._finish_migration(session, obs)
        except MacPoolError as exc:
            log.warning("cannot reconcile %s: %s", obs.describe(), exc)
            return
        self._set_refused(obs, result.refused)

    def _settle_plan(self, observed: list[Observed], *, wait: bool = False) -> Settling:
        """Which objects only need confirming, read outside any write transaction.

        The common watch event: a VM created through the webhook shows up with the pending
        allocations of its answer. When every allocation an object holds is its own MAC on an
        interface it has, allocated or pending with a stamp the object covers, and nothing
        else is to be done (no migration, no placeholder name, no new interface), aligning it
        is only "confirm the pending ones, learn the uid" (:meth:`_settle_write`, set-wise for
        the batch), or nothing at all (``quiet``: in step already, or an object that carries
        no MAC and holds none, as a VM created without the webhook): no write transaction.
        Everything else is left to :meth:`_align`.

        ``wait``: an object that holds nothing yet and carries only MACs held by reservations
        is most likely a VM the webhook just answered from its reserve, the answer about to be
        recorded (within 0.1 s, docs/RESERVED_MACS.md): it goes to ``later``, to be looked at
        again when confirming is all there is to do, instead of taking the reservation over now
        (which would also send the webhook's recording of its batch down the one-by-one way).
        """
        plan = Settling()
        owners: dict[int, tuple[int, str, str]] = {}
        for i, obs in enumerate(observed):
            scope_id = self._scope_ids.get(obs.namespace)
            if (
                scope_id is None  # a namespace not seen yet: its scope may not exist
                or obs.deleting
                or obs.generate_name
                or obs.migrated_from is not None
                or not self.managed(obs.kind, obs.namespace)
            ):
                continue
            owners[i] = (scope_id, obs.kind, obs.name)
        if not owners:
            return plan
        held = owners_holdings(self.database, owners.values())
        fresh = [i for i, owner in owners.items() if not held.get(owner) and observed[i].macs]
        if wait and fresh:
            carried = [m for i in fresh for m in observed[i].macs.values()]
            reserved = reservation_held(self.database, carried)
            plan.later = {i for i in fresh if all(m in reserved for m in observed[i].macs.values())}
        for i, owner in owners.items():
            obs = observed[i]
            mine = held.get(owner, [])
            if len(mine) != len(obs.macs):
                continue
            settled = _settled_by(obs)
            if not all(
                obs.macs.get(h.interface) == h.mac
                and (h.state == "allocated" or (h.state == "pending" and settled(h.transaction)))
                for h in mine
            ):
                continue
            pending = [h for h in mine if h.state == "pending"]
            uids = {h.id: obs.uid for h in mine if obs.uid and h.owner_uid is None}
            if not pending and not uids:
                plan.quiet.add(i)
                continue
            plan.pending.extend(pending)
            plan.uids.update(uids)
            plan.confirm.add(i)
        return plan

    def _settle_write(self, session: Session, plan: Settling) -> bool:
        """Confirm what the plan found to confirm; False (nothing written) if any of it changed
        since it was read: the caller then aligns those objects one by one."""
        if not plan.pending and not plan.uids:
            return True
        return confirm_holdings(session, ACTOR, plan.pending, uids=plan.uids)

    def _finish_migration(self, session: Session, obs: Observed) -> None:
        """A migrated VM that has run: the VM it was migrated from gives its MACs up for good."""
        if obs.ready and obs.migrated_from is not None:
            complete_handovers(
                session,
                ACTOR,
                scope_id=self._namespace_scope(session, obs.namespace),
                owner_kind=obs.kind,
                owner_name=obs.name,
                reason="ran",
            )

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
            scope = get_scope(session, namespace_scope_path(self.cluster_path, obs.namespace))
        except NotFound:
            return
        release_owner(
            session, ACTOR, scope=scope, owner_kind=obs.kind, owner_name=obs.name, reason="deleted"
        )

    def _release_holding(self, session: Session, holding: Holding) -> None:
        release_allocation(session, ACTOR, holding.id, reason="deleted")

    # --- scopes and the cluster's record ---------------------------------------------------

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


@dataclass(slots=True)
class Settling:
    """What :meth:`Aligner._settle_plan` found, by index of the objects it was given."""

    #: In step: nothing to write.
    quiet: set[int] = field(default_factory=set)
    #: Only pending allocations to confirm (``pending``) and uids to learn (``uids``).
    confirm: set[int] = field(default_factory=set)
    #: Waiting for their webhook answer's recording.
    later: set[int] = field(default_factory=set)
    pending: list[Holding] = field(default_factory=list)
    uids: dict[int, str] = field(default_factory=dict)


def _on_batch(
    apply: Callable[[Session, list[Any]], None], batch: list[Any], session: Session
) -> None:
    apply(session, batch)


def _handover(obs: Observed) -> Handover | None:
    """The hand-over an object's migration labels ask for, if any."""
    source = obs.migrated_from
    if source is None:
        return None
    return Handover(source.vm_id, plan=source.plan, migration=source.migration)


def in_step(obs: Observed, held: list[Holding]) -> bool:
    """Whether the allocations already are exactly the object's MACs, all confirmed.

    A migrated VM that has run is never taken as in step: its hand-overs may need completing.
    """
    if len(held) != len(obs.macs) or (obs.ready and obs.migrated_from is not None):
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


__all__ = ["ACTOR", "Aligner", "in_step"]
