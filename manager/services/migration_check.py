"""Check a migration before it runs: would these VMs' MACs move into this scope?

For each NIC of each source VM, the answer the webhook would give when the migrated copy is
created in the target scope (a Kubernetes namespace scope, which need not exist yet):

- ``hand-over``: the MAC is held by that same VM (its id is the holder's owner uid): it moves;
- ``free``: nobody holds it and it lies in the target's effective pool;
- ``external``: nobody holds it and it lies outside the target's pool (accepted, marked so);
- ``conflict``: another owner holds it (named, with scope and pool) where duplicates are not
  allowed, or another NIC of the plan asks for it too.

A MAC held elsewhere in pools that all allow duplicates is ``free`` with a note. Nothing is
written. The plan passes when no NIC is in conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.errors import InvalidInput, MacPoolError
from manager.core.mac import format_mac_int, parse_assignable_mac
from manager.db import Allocation, Pool
from manager.services.allocation_rows import describe_holder
from manager.services.bulk_allocations import CHUNK, homes_of
from manager.services.handovers import handover_source
from manager.services.scopes import planned_pool_id

#: The largest plan one check takes (NICs); larger plans are checked in parts.
MAX_NICS = 100_000
STATUSES = ("free", "hand-over", "conflict", "external")


@dataclass(frozen=True, slots=True)
class SourceNic:
    name: str
    mac: str


@dataclass(frozen=True, slots=True)
class SourceVm:
    """A VM about to be migrated: its id (oVirt VM id or KubeVirt UID), name and NICs."""

    id: str
    name: str
    nics: Sequence[SourceNic]


@dataclass(slots=True)
class NicVerdict:
    vm_id: str
    vm_name: str
    nic: str
    mac: str
    status: str
    holders: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


@dataclass(slots=True)
class MigrationCheck:
    scope: str
    pool: str
    nics: list[NicVerdict]

    @property
    def passes(self) -> bool:
        return all(n.status != "conflict" for n in self.nics)

    def counts(self) -> dict[str, int]:
        return {status: sum(n.status == status for n in self.nics) for status in STATUSES}


def check_migration(session: Session, *, scope: str, vms: Sequence[SourceVm]) -> MigrationCheck:
    """Classify every NIC of ``vms`` for a move into ``scope`` (see the module docstring)."""
    wanted: list[tuple[SourceVm, SourceNic, int]] = []
    for vm in vms:
        for nic in vm.nics:
            try:
                value = parse_assignable_mac(nic.mac).value
            except MacPoolError as exc:
                raise InvalidInput(
                    f"VM '{vm.name}' ({vm.id}) NIC '{nic.name}': {exc.message}", field="vms"
                ) from exc
            wanted.append((vm, nic, value))
    if len(wanted) > MAX_NICS:
        raise InvalidInput(
            f"A check takes at most {MAX_NICS} NICs; this plan has {len(wanted)}: check it in parts.",
            field="vms",
        )
    pool_id = planned_pool_id(session, scope)
    pool = session.get(Pool, pool_id)
    assert pool is not None  # a foreign key guarantees it
    macs = sorted({value for _, _, value in wanted})
    holders: dict[int, list[Allocation]] = {}
    for start in range(0, len(macs), CHUNK):
        chunk = macs[start : start + CHUNK]
        for allocation in session.scalars(
            select(Allocation).where(Allocation.mac.in_(chunk)).order_by(Allocation.id)
        ):
            holders.setdefault(allocation.mac, []).append(allocation)
    homes = homes_of(session.connection(), macs)
    askers: dict[int, list[tuple[SourceVm, SourceNic]]] = {}
    for vm, nic, value in wanted:
        askers.setdefault(value, []).append((vm, nic))
    verdicts = [
        _verdict(vm, nic, value, holders.get(value, []), askers[value], homes, pool)
        for vm, nic, value in wanted
    ]
    return MigrationCheck(scope=scope, pool=pool.name, nics=verdicts)


def _verdict(
    vm: SourceVm,
    nic: SourceNic,
    value: int,
    stored: list[Allocation],
    askers: list[tuple[SourceVm, SourceNic]],
    homes: dict[int, int],
    pool: Pool,
) -> NicVerdict:
    verdict = NicVerdict(vm.id, vm.name, nic.name, format_mac_int(value), "free")
    others = [(v, n) for v, n in askers if (v.id, n.name) != (vm.id, nic.name)]
    if others:
        v, n = others[0]
        verdict.status = "conflict"
        verdict.message = f"NIC '{n.name}' of VM '{v.name}' in this plan asks for it too."
        return verdict
    verdict.holders = [describe_holder(h) for h in stored]
    if stored:
        source = handover_source(stored, vm.id, taken=set())
        if source is not None:
            verdict.status = "hand-over"
            verdict.message = (
                f"Held by {source.owner_kind} '{source.owner_name}' in scope "
                f"{source.scope.path}: it moves with the VM."
            )
        elif pool.allow_duplicates and all(h.pool.allow_duplicates for h in stored):
            verdict.message = "Held elsewhere too; every pool involved allows duplicates."
        else:
            verdict.status = "conflict"
            verdict.message = "Held by " + "; ".join(
                f"{h.owner_kind} '{h.owner_name}' interface '{h.interface}' in scope "
                f"{h.scope.path} (pool '{h.pool.name}')"
                for h in stored
            )
        return verdict
    if homes.get(value) != pool.id:
        verdict.status = "external"
        verdict.message = f"Outside the ranges of pool '{pool.name}': accepted, marked external."
    return verdict


__all__ = [
    "MAX_NICS",
    "STATUSES",
    "MigrationCheck",
    "NicVerdict",
    "SourceNic",
    "SourceVm",
    "check_migration",
]
