"""Allocate every imported VM NIC through the services, classifying bad MACs first.

A MAC is *bad* (oVirt's ``VnicWithBadMacPredicate``) when it is held elsewhere and the
NIC's pool or a holder's pool does not allow duplicates, or when it lies outside the NIC's
pool's ranges. Bad MACs are reassigned with ``reassign_bad_macs``; otherwise they are
conflicts and the import is refused. NICs without a MAC get a new one.

Two passes, like the engine's import: first every NIC that keeps its MAC (so that a MAC the
export carries is never handed to another NIC as a "new" one), then new and reassigned MACs.
Lookups are batched (holders of every imported MAC, every existing ``ovirt-vm`` identity in
the target scopes) to classify without a query per NIC; the writes go through
:func:`~manager.services.allocations.allocate_macs` (the same rules as ``allocate_mac``, checked
again, applied to a batch of NICs at a time). If the services refuse a batch (a pool ran out,
a concurrent change), that batch is retried NIC by NIC with ``allocate_mac`` so that only the
refused NICs become conflicts, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import MacPoolError
from manager.core.mac import MacAddress, format_mac_int
from manager.core.ranges import RangeSet
from manager.services import (
    Allocation,
    AllocationRequest,
    AllocationResult,
    Pool,
    Scope,
    allocate_mac,
    allocate_macs,
    pool_ranges,
)
from plugins.ovirt.records import OvirtNic, OvirtVm
from plugins.ovirt.report import BadReason, ImportReport, NicOutcome, NicStatus, VmOutcome

OWNER_KIND = "ovirt-vm"
#: Rows per ``IN (...)`` list: below every backend's bound-parameter limit.
_CHUNK = 500
#: NICs per ``allocate_macs`` call (each call locks the pools once and writes in batches).
_BATCH = 2000

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a VM's NICs go: its scope, the scope's effective pool and that pool's ranges."""

    scope: Scope
    pool: Pool
    ranges: RangeSet


@dataclass(frozen=True, slots=True)
class _Holder:
    allows_duplicates: bool
    text: str


@dataclass(frozen=True, slots=True)
class _Identity:
    mac: int
    uid: str | None


@dataclass(slots=True)
class _Pending:
    vm: OvirtVm
    target: Target
    outcome: NicOutcome


def target_for(scope: Scope, pool: Pool) -> Target:
    """A :class:`Target` for a scope and its effective pool."""
    return Target(scope, pool, pool_ranges(pool))


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _load_holders(session: Session, macs: set[int]) -> dict[int, list[_Holder]]:
    holders: dict[int, list[_Holder]] = {}
    for chunk in _chunks(sorted(macs)):
        rows = session.execute(
            select(
                Allocation.mac,
                Allocation.owner_kind,
                Allocation.owner_name,
                Allocation.interface,
                Scope.path,
                Pool.name,
                Pool.allow_duplicates,
            )
            .join(Scope, Scope.id == Allocation.scope_id)
            .join(Pool, Pool.id == Allocation.pool_id)
            .where(Allocation.mac.in_(chunk))
            .order_by(Allocation.id)
        ).all()
        for mac, kind, owner, interface, path, pool, allows in rows:
            text = f"{kind} '{owner}' interface '{interface}' in scope {path} (pool '{pool}')"
            holders.setdefault(mac, []).append(_Holder(allows, text))
    return holders


def _load_identities(
    session: Session, scope_ids: set[int]
) -> dict[tuple[int, str, str], _Identity]:
    found: dict[tuple[int, str, str], _Identity] = {}
    for chunk in _chunks(sorted(scope_ids)):
        rows = session.execute(
            select(
                Allocation.scope_id,
                Allocation.owner_name,
                Allocation.interface,
                Allocation.mac,
                Allocation.owner_uid,
            ).where(Allocation.owner_kind == OWNER_KIND, Allocation.scope_id.in_(chunk))
        ).all()
        for scope_id, owner, interface, mac, uid in rows:
            found[(scope_id, owner, interface)] = _Identity(mac, uid)
    return found


def interface_names(vm: OvirtVm) -> list[str]:
    """The interface name of each NIC: its name, made unique within the VM (``nic1#2``)."""
    seen: dict[str, int] = {}
    names = []
    for nic in vm.nics:
        count = seen[nic.name] = seen.get(nic.name, 0) + 1
        names.append(nic.name if count == 1 else f"{nic.name}#{count}")
    return names


class NicAllocator:
    """Classifies and allocates the NICs of one import (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        actor: Actor,
        *,
        reassign_bad_macs: bool,
        report: ImportReport,
    ) -> None:
        self.session = session
        self.actor = actor
        self.reassign = reassign_bad_macs
        self.report = report
        self._holders: dict[int, list[_Holder]] = {}
        self._identities: dict[tuple[int, str, str], _Identity] = {}
        self._pending: list[_Pending] = []
        #: NICs keeping their MAC, classified and recorded, waiting for the batch write.
        self._kept: list[tuple[_Pending, int]] = []

    def run(
        self, placed: Sequence[tuple[OvirtVm, Target]], *, progress: Progress | None = None
    ) -> None:
        """Allocate every NIC of every VM (in ``placed`` order) and fill the report."""
        macs = {nic.mac for vm, _ in placed for nic in vm.nics if nic.mac is not None}
        self._holders = _load_holders(self.session, macs)
        self._identities = _load_identities(self.session, {t.scope.id for _, t in placed})
        total = sum(len(vm.nics) for vm, _ in placed)
        done = 0
        for vm, target in placed:
            outcome = VmOutcome(vm.label, vm.id, vm.source, target.scope.path, target.pool.name)
            self.report.vms.append(outcome)
            for nic, interface in zip(vm.nics, interface_names(vm), strict=True):
                outcome.nics.append(self._first_pass(vm, nic, interface, target))
            done += len(vm.nics)
            if progress is not None:
                progress(done, total)
        self._write(self._kept)
        self._write([(pending, None) for pending in self._pending])

    def _first_pass(self, vm: OvirtVm, nic: OvirtNic, interface: str, target: Target) -> NicOutcome:
        mac = nic.mac_text
        outcome = NicOutcome(nic.name, interface, NicStatus.KEPT, mac)
        key = (target.scope.id, vm.label, interface)
        existing = self._identities.get(key)
        if existing is not None:
            return self._existing(vm, nic, outcome, existing, target)
        if nic.mac is None:
            outcome.status = NicStatus.NEW
            self._pending.append(_Pending(vm, target, outcome))
            return outcome
        bad = self._bad(nic.mac, target, outcome)
        if bad:
            if self.reassign:
                outcome.status, outcome.old_mac, outcome.mac = NicStatus.REASSIGNED, mac, None
                self._pending.append(_Pending(vm, target, outcome))
            else:
                outcome.status = NicStatus.CONFLICT
            return outcome
        outcome.reason, outcome.holders, outcome.message = None, [], ""
        # Recorded now (the MAC is known), so later NICs of this import are classified against
        # it; written with the other kept NICs after this pass.
        self._remember(vm, target, outcome, nic.mac)
        self._kept.append((_Pending(vm, target, outcome), nic.mac))
        return outcome

    def _existing(
        self, vm: OvirtVm, nic: OvirtNic, outcome: NicOutcome, existing: _Identity, target: Target
    ) -> NicOutcome:
        held = format_mac_int(existing.mac)
        if existing.uid is not None and existing.uid != vm.id:
            outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
            outcome.message = (
                f"another VM (id {existing.uid}) with the same name already holds {held} on "
                f"interface '{outcome.interface}' in scope {target.scope.path}."
            )
            return outcome
        if nic.mac is None or nic.mac == existing.mac or self.reassign:
            outcome.status = NicStatus.UNCHANGED
            if nic.mac is not None and nic.mac != existing.mac:
                outcome.old_mac = outcome.mac
                outcome.message = f"keeps {held}, given to it by an earlier import."
            outcome.mac = held
            if target.ranges.find(existing.mac) is None:
                outcome.status = NicStatus.EXTERNAL
                outcome.message = (
                    outcome.message or f"already holds {held}, outside pool '{target.pool.name}'."
                )
            return outcome
        outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
        outcome.message = (
            f"this NIC already holds {held} in MacPool (scope {target.scope.path}); release it "
            "or import with reassign_bad_macs to keep it."
        )
        return outcome

    def _bad(self, mac: int, target: Target, outcome: NicOutcome) -> bool:
        holders = self._holders.get(mac, [])
        refusing = not target.pool.allow_duplicates or any(not h.allows_duplicates for h in holders)
        if holders and refusing:
            outcome.reason = BadReason.IN_USE
            outcome.holders = [h.text for h in holders]
            outcome.message = f"{format_mac_int(mac)} is already in use by " + "; ".join(
                outcome.holders
            )
            outcome.message += ", and duplicates are not allowed."
            return True
        if target.ranges.find(mac) is None:
            outcome.reason = BadReason.OUTSIDE_POOL
            outcome.message = (
                f"{format_mac_int(mac)} is outside the ranges of pool '{target.pool.name}' "
                f"({', '.join(str(r) for r in target.ranges)})."
            )
            return True
        return False

    def _write(self, items: Sequence[tuple[_Pending, int | None]]) -> None:
        """Allocate NICs a batch at a time; a refused batch is retried NIC by NIC."""
        for first in range(0, len(items), _BATCH):
            chunk = items[first : first + _BATCH]
            requests = [
                AllocationRequest(
                    p.target.scope,
                    Owner(OWNER_KIND, p.vm.label, p.vm.id),
                    p.outcome.interface,
                    mac=None if mac is None else MacAddress(mac),
                )
                for p, mac in chunk
            ]
            try:
                results = allocate_macs(self.session, self.actor, requests)
            except MacPoolError:
                for (pending, mac), request in zip(chunk, requests, strict=True):
                    self._allocate_one(pending, request, kept=mac is not None)
                continue
            for (pending, mac), result in zip(chunk, results, strict=True):
                self._record(pending, result, kept=mac is not None)

    def _allocate_one(self, pending: _Pending, request: AllocationRequest, *, kept: bool) -> None:
        try:
            result = allocate_mac(
                self.session,
                self.actor,
                scope=request.scope,
                owner=request.owner,
                interface=request.interface,
                mac=request.mac,
            )
        except MacPoolError as exc:
            # The services have the last word: anything they refuse is a conflict of this NIC.
            outcome = pending.outcome
            outcome.status, outcome.reason, outcome.message = (
                NicStatus.CONFLICT,
                BadReason.REFUSED,
                exc.message,
            )
            return
        self._record(pending, result, kept=kept)

    def _record(self, pending: _Pending, result: AllocationResult, *, kept: bool) -> None:
        vm, target, outcome = pending.vm, pending.target, pending.outcome
        value = result.allocation.mac
        if not result.created:
            # Only a NIC of this very import can hold the identity by now: two VMs share a name.
            outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
            outcome.message = (
                f"another VM named '{vm.label}' in this import already holds "
                f"{format_mac_int(value)} on interface '{outcome.interface}' in scope "
                f"{target.scope.path}."
            )
            return
        if not kept:  # a kept NIC was recorded when it was classified
            self._remember(vm, target, outcome, value)

    def _remember(self, vm: OvirtVm, target: Target, outcome: NicOutcome, value: int) -> None:
        """Note a NIC's new allocation for the classification of the NICs after it."""
        outcome.mac = format_mac_int(value)
        self._identities[(target.scope.id, vm.label, outcome.interface)] = _Identity(value, vm.id)
        self._holders.setdefault(value, []).append(
            _Holder(
                target.pool.allow_duplicates,
                f"{OWNER_KIND} '{vm.label}' interface '{outcome.interface}' in scope "
                f"{target.scope.path} (pool '{target.pool.name}', this import)",
            )
        )


__all__ = ["OWNER_KIND", "NicAllocator", "Target", "interface_names", "target_for"]
