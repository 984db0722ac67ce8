"""Every imported VM NIC as one request to the allocation kernel, and its plan read as a report.

The kernel (:class:`~manager.services.Forecast`) plans the whole import at once with the rules
every channel uses; this module only asks and reads the answers. A MAC is *bad* (oVirt's
``VnicWithBadMacPredicate``) when the kernel refuses it to the NIC: held elsewhere while the
NIC's pool or a holder's pool does not allow duplicates (``MacInUse``), or outside the NIC's
pool's ranges (``OutsidePool``: the import asks for MACs of the NIC's pool only, as the engine
did). Bad MACs are reassigned with ``reassign_bad_macs`` (the kernel plans such a NIC again
without its MAC); otherwise they are conflicts and the import is refused. NICs without a MAC
get a new one.

The kernel steps every NIC that names a MAC first, then the NICs that need a new one (NICs
without a MAC and reassigned ones, in export order), as the engine's import did: a MAC the
export carries is never handed to another NIC as a new one. An owner identity (VM name and
interface in the scope) that already holds a MAC is reported as the engine would: unchanged,
external, or a conflict naming the VM that holds it.

Planning reads only; the caller writes the plan (:meth:`Forecast.write`) or discards it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import MacInUse, MacPoolError, OutsidePool
from manager.core.mac import MacAddress, format_mac_int
from manager.core.ranges import RangeSet
from manager.services import (
    STAGE_TTL_SECONDS,
    AllocationRequest,
    Forecast,
    Planned,
    Pool,
    Prior,
    Scope,
    pool_ranges,
)
from plugins.ovirt.records import OvirtNic, OvirtVm
from plugins.ovirt.report import BadReason, ImportReport, NicOutcome, NicStatus, VmOutcome

OWNER_KIND = "ovirt-vm"

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a VM's NICs go: its scope, the scope's effective pool and that pool's ranges."""

    scope: Scope
    pool: Pool
    ranges: RangeSet


@dataclass(frozen=True, slots=True)
class _Nic:
    vm: OvirtVm
    nic: OvirtNic
    target: Target
    outcome: NicOutcome


def target_for(scope: Scope, pool: Pool) -> Target:
    """A :class:`Target` for a scope and its effective pool."""
    return Target(scope, pool, pool_ranges(pool))


def interface_names(vm: OvirtVm) -> list[str]:
    """The interface name of each NIC: its name, made unique within the VM (``nic1#2``)."""
    seen: dict[str, int] = {}
    names = []
    for nic in vm.nics:
        count = seen[nic.name] = seen.get(nic.name, 0) + 1
        names.append(nic.name if count == 1 else f"{nic.name}#{count}")
    return names


def _holder_text(holder: dict[str, Any]) -> str:
    """A holder from the kernel's refusal, as the report names it."""
    this_import = ", this import" if holder.get("allocation_id") is None else ""
    return (
        f"{holder['owner_kind']} '{holder['owner_name']}' interface '{holder['interface']}' "
        f"in scope {holder['scope']} (pool '{holder['pool']}'{this_import})"
    )


def _bad(error: MacPoolError) -> bool:
    """Whether the kernel's refusal makes the NIC's MAC bad (reassignable)."""
    return isinstance(error, MacInUse | OutsidePool)


class NicAllocator:
    """Plans the NICs of one import with the kernel and fills the report (see the docstring).

    ``locked``: plan inside the caller's write transaction with the kernel's locks (the plan
    cannot go stale); otherwise plan in a read transaction, to be written later.
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        *,
        reassign_bad_macs: bool,
        report: ImportReport,
        locked: bool = False,
        stage: str | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> None:
        self.session = session
        self.actor = actor
        self.reassign = reassign_bad_macs
        self.report = report
        self.locked = locked
        #: A staged batch's stamp: the new allocations are written staged (see
        #: :mod:`manager.services.staging`), made lasting when the whole import is written.
        self.stage = stage
        #: MACs requested by the import's other chunks: no NIC of this one gets them new.
        self.avoid = avoid

    def plan(
        self,
        placed: Sequence[tuple[OvirtVm, Target]],
        *,
        progress: Progress | None = None,
        planned_pools: Sequence[Pool] = (),
    ) -> Forecast:
        """Plan every NIC of every VM (in ``placed`` order), fill the report, return the plan.

        ``planned_pools``: pools the import creates when it is written (made-up ids), which
        targets may use."""
        nics: list[_Nic] = []
        requests: list[AllocationRequest] = []
        targets: list[tuple[Scope, int]] = []
        for vm, target in placed:
            outcome = VmOutcome(vm.label, vm.id, vm.source, target.scope.path, target.pool.name)
            self.report.vms.append(outcome)
            for nic, interface in zip(vm.nics, interface_names(vm), strict=True):
                nic_outcome = NicOutcome(nic.name, interface, NicStatus.KEPT, nic.mac_text)
                outcome.nics.append(nic_outcome)
                nics.append(_Nic(vm, nic, target, nic_outcome))
                requests.append(
                    AllocationRequest(
                        target.scope,
                        Owner(OWNER_KIND, vm.label, vm.id),
                        interface,
                        mac=None if nic.mac is None else MacAddress(nic.mac),
                        ttl_seconds=None if self.stage is None else STAGE_TTL_SECONDS,
                        transaction=self.stage,
                    )
                )
                targets.append((target.scope, target.pool.id))
        forecast = Forecast(
            self.session, self.actor, locked=self.locked, in_range_only=True, avoid=self.avoid
        )
        forecast.assume(planned_pools)
        retry = (lambda _i, error: _bad(error)) if self.reassign else None
        try:
            planned = forecast.plan(requests, retry=retry, progress=progress, targets=targets)
        except BaseException:
            forecast.discard()
            raise
        for i, (item, answer) in enumerate(zip(nics, planned, strict=True)):
            self._classify(i, item, answer, planned)
        return forecast

    def _classify(self, i: int, item: _Nic, planned: Planned, every: Sequence[Planned]) -> None:
        outcome = item.outcome
        if planned.retried:
            self._reassigned(item, planned)
            return
        prior = planned.prior
        if prior is not None:
            if prior.allocation_id is not None or self._kept_before(prior, i, every):
                self._existing(item, prior)
            else:
                self._taken_in_import(item, prior.mac)
            return
        error = planned.error
        if error is not None:
            outcome.status = NicStatus.CONFLICT
            if _bad(error):
                self._describe_bad(outcome, error)
            else:  # the kernel has the last word: anything it refuses is a conflict
                outcome.reason, outcome.message = BadReason.REFUSED, error.message
            return
        assert planned.mac is not None
        outcome.mac = format_mac_int(planned.mac)
        if item.nic.mac is None:
            outcome.status = NicStatus.NEW

    @staticmethod
    def _kept_before(prior: Prior, i: int, every: Sequence[Planned]) -> bool:
        """Whether a NIC of this import holding the identity kept its MAC and comes before."""
        j = prior.request
        return j is not None and j < i and every[j].created and not every[j].retried

    def _describe_bad(self, outcome: NicOutcome, error: MacPoolError) -> None:
        if isinstance(error, MacInUse):
            outcome.reason = BadReason.IN_USE
            outcome.holders = [_holder_text(h) for h in error.details.get("holders", [])]
            mac = error.details.get("mac") or outcome.mac
            outcome.message = f"{mac} is already in use by " + "; ".join(outcome.holders)
            outcome.message += ", and duplicates are not allowed."
        else:
            outcome.reason, outcome.message = BadReason.OUTSIDE_POOL, error.message

    def _reassigned(self, item: _Nic, planned: Planned) -> None:
        outcome = item.outcome
        assert planned.error is not None
        self._describe_bad(outcome, planned.error)
        outcome.status, outcome.old_mac, outcome.mac = NicStatus.REASSIGNED, outcome.mac, None
        if planned.retry_error is not None:
            outcome.status, outcome.reason, outcome.message = (
                NicStatus.CONFLICT,
                BadReason.REFUSED,
                planned.retry_error.message,
            )
        elif planned.prior is not None:
            self._taken_in_import(item, planned.prior.mac)
        else:
            assert planned.mac is not None
            outcome.mac = format_mac_int(planned.mac)

    def _taken_in_import(self, item: _Nic, mac: int) -> None:
        """Another NIC of this import, planned earlier, holds the NIC's identity."""
        outcome = item.outcome
        outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
        outcome.message = (
            f"another VM named '{item.vm.label}' in this import already holds "
            f"{format_mac_int(mac)} on interface '{outcome.interface}' in scope "
            f"{item.target.scope.path}."
        )

    def _existing(self, item: _Nic, prior: Prior) -> None:
        """The NIC's identity held a MAC before this NIC was planned (stored, or kept by a NIC
        of this import that comes earlier)."""
        vm, nic, target, outcome = item.vm, item.nic, item.target, item.outcome
        held = format_mac_int(prior.mac)
        outcome.reason, outcome.holders, outcome.message = None, [], ""
        if prior.owner_uid is not None and prior.owner_uid != vm.id:
            outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
            outcome.message = (
                f"another VM (id {prior.owner_uid}) with the same name already holds {held} on "
                f"interface '{outcome.interface}' in scope {target.scope.path}."
            )
            return
        if nic.mac is None or nic.mac == prior.mac or self.reassign:
            outcome.status = NicStatus.UNCHANGED
            if nic.mac is not None and nic.mac != prior.mac:
                outcome.old_mac = outcome.mac
                outcome.message = f"keeps {held}, given to it by an earlier import."
            outcome.mac = held
            if target.ranges.find(prior.mac) is None:
                outcome.status = NicStatus.EXTERNAL
                outcome.message = (
                    outcome.message or f"already holds {held}, outside pool '{target.pool.name}'."
                )
            return
        outcome.status, outcome.reason = NicStatus.CONFLICT, BadReason.INTERFACE_IN_USE
        outcome.message = (
            f"this NIC already holds {held} in MacPool (scope {target.scope.path}); release it "
            "or import with reassign_bad_macs to keep it."
        )


__all__ = ["OWNER_KIND", "NicAllocator", "Target", "interface_names", "target_for"]
