"""The :class:`~plugins.kubernetes.broker.MacBroker` over MacPool's allocation services.

A review runs inside a write transaction that :mod:`plugins.kubernetes.group_commit` opens
(shared by the reviews that arrive together) and commits when the object is admitted; refusals
and ``dryRun`` roll it back. A dry run therefore runs every rule for real (locks, duplicates,
the next free MAC) and stores nothing.

Namespaces become ``namespace`` scopes under the cluster scope on first sight and inherit its
pool; an administrator gives a namespace its own pool by assigning one to that scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.core.actor import Owner as ServiceOwner
from manager.core.errors import NameInUse, NotFound
from manager.core.mac import format_mac_int, parse_assignable_mac
from manager.services import (
    AllocationPlan,
    AllocationRequest,
    Handover,
    Scope,
    allocate_mac,
    ensure_path,
    ensure_scope,
    find_by_identity,
    get_scope,
    owner_interfaces,
    release_allocation,
    scope_and_pool_id,
)
from plugins.kubernetes.broker import NicClaim, Owner
from plugins.kubernetes.review import AdmissionResult
from plugins.kubernetes.scoping import namespace_scope_path

#: Who the audit log names for webhook changes.
WEBHOOK_ACTOR: Final = Actor("kubernetes-webhook", "webhook")

Reviewer = Callable[..., AdmissionResult]


def cluster_scope_kinds(path: str) -> list[str]:
    """Scope kinds along the cluster scope's path: data centers, then the cluster itself."""
    depth = len([part for part in path.split("/") if part])
    return ["datacenter"] * (depth - 1) + ["cluster"]


def namespace_scope(
    session: Session, actor: Actor, *, cluster_scope: str, namespace: str, create: bool = True
) -> Scope | None:
    """The namespace's scope under the cluster scope; created (with the cluster) when missing.

    With ``create=False`` a missing scope gives ``None`` (a namespace never seen holds nothing).
    """
    path = namespace_scope_path(cluster_scope, namespace)
    try:
        return get_scope(session, path)
    except NotFound:
        if not create:
            return None
    cluster = _get_or_create(
        session,
        cluster_scope,
        lambda: ensure_path(
            session, actor, cluster_scope, kinds=cluster_scope_kinds(cluster_scope)
        ),
    )
    return _get_or_create(
        session,
        path,
        lambda: ensure_scope(session, actor, parent=cluster, kind="namespace", name=namespace),
    )


def _get_or_create(session: Session, path: str, create: Callable[[], Scope]) -> Scope:
    """The scope at ``path``, created when missing; a concurrent creator's scope wins.

    On PostgreSQL two reviews of a new namespace race to insert it: the loser's insert waits for
    the winner's commit and fails on the unique name (or the service's name check sees the
    committed winner first); the savepoint is rolled back and the winner's scope is read.
    """
    try:
        return get_scope(session, path)
    except NotFound:
        pass
    try:
        with session.begin_nested():
            return create()
    except (IntegrityError, NameInUse):  # NameInUse: the winner committed before our check
        return get_scope(session, path)


@dataclass(frozen=True)
class ClaimPlan:
    """What one owner's claims need, given what it holds (see :func:`plan_claim`)."""

    #: Interface → MAC (lower-case colon form) of allocations that stay as they are.
    keep: dict[str, str]
    #: Ids of the owner's allocations to release first (their MAC moves or is re-requested).
    release: list[int]
    #: Claims that need a new allocation (automatic, or the requested MAC).
    new: list[NicClaim]


def plan_claim(held: Mapping[str, tuple[int, int]], claims: Sequence[NicClaim]) -> ClaimPlan:
    """Split an owner's claims against its allocations (interface → (allocation id, MAC)).

    An interface that holds the requested MAC, or holds one and requests none, keeps it. Every
    MAC that moves is released first, so interfaces can swap MACs within one request; a MAC this
    owner holds on an interface the request drops, and asks for on another (an interface renamed
    with its MAC kept), moves too: it stays the owner's own MAC.
    """
    claimed = {claim.interface for claim in claims}
    requested = {parse_assignable_mac(c.mac).value for c in claims if c.mac is not None}
    keep: dict[str, str] = {}
    release: list[int] = []
    for interface, (allocation_id, mac) in held.items():
        wanted = next((c.mac for c in claims if c.interface == interface), None)
        moving = wanted is not None and parse_assignable_mac(wanted).value != mac
        renamed = interface not in claimed and mac in requested
        if moving or renamed:
            release.append(allocation_id)
        elif interface in claimed:
            keep[interface] = format_mac_int(mac)
    new = [claim for claim in claims if claim.interface not in keep]
    return ClaimPlan(keep=keep, release=release, new=new)


class ServiceBroker:
    """Allocation operations of one review, inside the session ``open_session`` provides.

    ``open_session`` is called once, on first use. The broker never commits: the caller decides
    from the review's outcome (see :mod:`plugins.kubernetes.group_commit`). Brokers of reviews
    that share one transaction may share ``scopes``, the namespaces resolved in it.
    """

    def __init__(
        self,
        open_session: Callable[[], Session],
        *,
        cluster_scope: str,
        wait_time: int,
        actor: Actor = WEBHOOK_ACTOR,
        now: datetime | None = None,
        scopes: dict[str, tuple[Scope, int]] | None = None,
        plan: AllocationPlan | None = None,
    ) -> None:
        self._open_session = open_session
        self._session: Session | None = None
        self.cluster_scope = cluster_scope
        self.wait_time = wait_time
        self.actor = actor
        self.now = now
        #: Namespace → (scope, effective pool id); brokers sharing one transaction share it.
        self._scopes: dict[str, tuple[Scope, int]] = {} if scopes is None else scopes
        #: Group commit: automatic MACs of new interfaces are planned here and written with
        #: the batch; anything else writes the plan first and runs at once.
        self._batch_plan = plan
        self._held: dict[tuple[int, str, str], list[tuple[int, str, int]]] = {}

    @property
    def session(self) -> Session:
        """The review's session, opened on first use."""
        if self._session is None:
            self._session = self._open_session()
        return self._session

    def _scope(self, namespace: str, *, create: bool) -> tuple[Scope, int] | None:
        """The namespace's scope and the id of its effective pool (one query when it exists).

        A review asks for its namespace twice (held_macs, then claim): it is resolved once.
        """
        resolved = self._scopes.get(namespace)
        if resolved is None:
            path = namespace_scope_path(self.cluster_scope, namespace)
            try:
                resolved = scope_and_pool_id(self.session, path)
            except NotFound:
                if not create:
                    return None
                scope = namespace_scope(
                    self.session,
                    self.actor,
                    cluster_scope=self.cluster_scope,
                    namespace=namespace,
                )
                assert scope is not None
                resolved = scope_and_pool_id(self.session, scope)
            self._scopes[namespace] = resolved
        return resolved

    def _allocations(self, scope: Scope, owner: Owner) -> list[tuple[int, str, int]]:
        """(id, interface, MAC) of the owner's allocations; read once per review and owner."""
        key = (scope.id, owner.kind, owner.name)
        rows = self._held.pop(key, None)
        if self._batch_plan is not None and self._batch_plan.holds(*key):
            # This owner has planned allocations: write them, then read them from the table.
            self._batch_plan.write()
            rows = None
        if rows is None:
            rows = owner_interfaces(
                self.session, scope_id=scope.id, owner_kind=owner.kind, owner_name=owner.name
            )
        return rows

    def _remember(self, scope: Scope, owner: Owner, rows: list[tuple[int, str, int]]) -> None:
        # held_macs then claim read the same rows; nothing changes them in between.
        self._held[(scope.id, owner.kind, owner.name)] = rows

    def held_macs(self, owner: Owner) -> dict[str, str]:
        """Interface name → MAC of every allocation the owner holds."""
        resolved = self._scope(owner.namespace, create=False)
        if resolved is None:
            return {}
        scope = resolved[0]
        rows = self._allocations(scope, owner)
        self._remember(scope, owner, rows)
        return {interface: format_mac_int(mac) for _, interface, mac in rows}

    def claim(
        self,
        owner: Owner,
        claims: Sequence[NicClaim],
        *,
        transaction: str | None,
        dry_run: bool,
    ) -> dict[str, str]:
        """Make each interface hold its MAC (see :meth:`MacBroker.claim`).

        ``dry_run`` changes nothing here: the caller rolls the transaction back, so the answer
        is computed by the very same rules (and MACs handed out stay distinct within the call).
        """
        resolved = self._scope(owner.namespace, create=True)
        assert resolved is not None
        scope, pool_id = resolved
        held = {interface: (id_, mac) for id_, interface, mac in self._allocations(scope, owner)}
        plan = plan_claim(held, claims)
        if self._batch_plan is not None:
            if not plan.release and all(claim.mac is None for claim in plan.new):
                return self._planned(scope, pool_id, owner, claims, plan, transaction)
            self._batch_plan.write()
        for allocation_id in plan.release:
            release_allocation(self.session, self.actor, allocation_id, reason="moved")
        service_owner = ServiceOwner(kind=owner.kind, name=owner.name, uid=owner.uid)
        source = owner.migrated_from
        handover = (
            None
            if source is None
            else Handover(source.vm_id, plan=source.plan, migration=source.migration)
        )
        result = dict(plan.keep)
        for claim in plan.new:
            created = allocate_mac(
                self.session,
                self.actor,
                scope=scope,
                effective_pool_id=pool_id,
                owner=service_owner,
                interface=claim.interface,
                mac=claim.mac,
                ttl_seconds=self.wait_time,
                transaction=transaction,
                now=self.now,
                handover=handover if claim.mac is not None else None,
            ).allocation
            result[claim.interface] = format_mac_int(created.mac)
        return {claim.interface: result[claim.interface] for claim in claims}

    def _planned(
        self,
        scope: Scope,
        pool_id: int,
        owner: Owner,
        claims: Sequence[NicClaim],
        plan: ClaimPlan,
        transaction: str | None,
    ) -> dict[str, str]:
        """:meth:`claim` when every new interface takes the next free MAC: planned, not written."""
        assert self._batch_plan is not None
        service_owner = ServiceOwner(kind=owner.kind, name=owner.name, uid=owner.uid)
        requests = [
            AllocationRequest(
                scope,
                service_owner,
                claim.interface,
                ttl_seconds=self.wait_time,
                transaction=transaction,
            )
            for claim in plan.new
        ]
        # The owner's allocations were read in this transaction (_allocations): the new
        # interfaces hold nothing in the table.
        macs = self._batch_plan.allocate(
            requests, [(scope, pool_id)] * len(requests), now=self.now, unheld=True
        )
        result = dict(plan.keep)
        for claim, mac in zip(plan.new, macs, strict=True):
            result[claim.interface] = format_mac_int(mac)
        return {claim.interface: result[claim.interface] for claim in claims}

    def release(self, owner: Owner, interfaces: Sequence[str], *, dry_run: bool) -> None:
        """Release the owner's allocations on these interfaces (the caller rolls back dry runs)."""
        resolved = self._scope(owner.namespace, create=False)
        if resolved is None:
            return
        if self._batch_plan is not None:
            self._batch_plan.write()
        scope = resolved[0]
        for interface in interfaces:
            found = find_by_identity(
                self.session,
                scope=scope,
                owner_kind=owner.kind,
                owner_name=owner.name,
                interface=interface,
            )
            if found is not None:
                release_allocation(self.session, self.actor, found.id)


__all__ = [
    "WEBHOOK_ACTOR",
    "ClaimPlan",
    "ServiceBroker",
    "cluster_scope_kinds",
    "namespace_scope",
    "plan_claim",
]
