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

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
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
    ensure_path,
    ensure_scope,
    get_scope,
    owners_named_like,
    release_allocation,
    release_owner,
    rename_owner,
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
                            mac=MacAddress(mac),
                            handover=_handover(obs),
                            adopt_reserved=True,
                        )
                        for obs in batch
                        for interface, mac in sorted(obs.macs.items())
                    ]
                    allocate_macs(session, ACTOR, requests)
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
