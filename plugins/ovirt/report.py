"""The import report: what an oVirt import did (or, in a dry run, would do), and its text form.

The report is built by the importer while it works and is the same object for a dry run and
an apply, so that a dry run shows exactly what applying would do. Every channel shows it:
the CLI as text or JSON, the REST API as JSON (:meth:`ImportReport.to_dict`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from plugins.ovirt.errors import locate
from plugins.ovirt.records import Notice, NoticeKind


class NicStatus(StrEnum):
    """What happened to one VM NIC."""

    #: The NIC's MAC was imported as it is.
    KEPT = "kept"
    #: An identical allocation already existed (a re-import): nothing changed.
    UNCHANGED = "unchanged"
    #: The NIC had no usable MAC and got one from its pool.
    NEW = "new"
    #: The NIC's MAC was bad and was replaced by one from its pool (``reassign_bad_macs``).
    REASSIGNED = "reassigned"
    #: The NIC already holds its MAC in MacPool, outside its pool's ranges (kept as external).
    EXTERNAL = "external"
    #: The NIC's MAC is bad and ``reassign_bad_macs`` is off: the import is refused.
    CONFLICT = "conflict"


class BadReason(StrEnum):
    """Why a MAC is bad (oVirt's ``VnicWithBadMacPredicate`` plus MacPool's identity rule)."""

    IN_USE = "in_use"
    OUTSIDE_POOL = "outside_pool"
    INTERFACE_IN_USE = "interface_in_use"
    REFUSED = "refused"


@dataclass(slots=True)
class NicOutcome:
    """One NIC: its MAC before and after, the status and, for bad MACs, why and who holds it."""

    name: str
    interface: str
    status: NicStatus
    mac: str | None
    old_mac: str | None = None
    reason: BadReason | None = None
    message: str = ""
    holders: list[str] = field(default_factory=list)


@dataclass(slots=True)
class VmOutcome:
    """One VM: where its NICs were allocated and what happened to each of them."""

    name: str
    id: str
    source: str
    scope: str
    pool: str
    nics: list[NicOutcome] = field(default_factory=list)


@dataclass(slots=True)
class PoolOutcome:
    """One oVirt pool and the MacPool pool it maps onto."""

    ovirt_id: str
    ovirt_name: str
    name: str
    status: str  # created | unchanged | merged | skipped
    ranges: list[str]
    allow_duplicates: bool
    message: str = ""


@dataclass(slots=True)
class ScopeOutcome:
    """One data center or cluster scope."""

    path: str
    kind: str
    status: str  # created | unchanged | assigned | kept
    pool: str | None
    message: str = ""


@dataclass(slots=True)
class ImportReport:
    """Everything an import did or would do."""

    dry_run: bool
    reassign_bad_macs: bool
    pools: list[PoolOutcome] = field(default_factory=list)
    scopes: list[ScopeOutcome] = field(default_factory=list)
    vms: list[VmOutcome] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    applied: bool = False

    @property
    def conflicts(self) -> list[tuple[VmOutcome, NicOutcome]]:
        """Every NIC whose bad MAC refuses the import."""
        return [(vm, nic) for vm in self.vms for nic in vm.nics if nic.status is NicStatus.CONFLICT]

    @property
    def refused(self) -> bool:
        """True when at least one NIC is in conflict: nothing is (or would be) written."""
        return bool(self.conflicts)

    def totals(self) -> dict[str, int]:
        """Counts per NIC status plus VMs, NICs, pools and scopes created."""
        counts = Counter(nic.status.value for vm in self.vms for nic in vm.nics)
        return {
            "vms": len(self.vms),
            "nics": sum(len(vm.nics) for vm in self.vms),
            **{status.value: counts.get(status.value, 0) for status in NicStatus},
            "pools_created": sum(p.status == "created" for p in self.pools),
            "scopes_created": sum(s.status == "created" for s in self.scopes),
            "warnings": len(self.warnings),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return {
            "dry_run": self.dry_run,
            "applied": self.applied,
            "refused": self.refused,
            "reassign_bad_macs": self.reassign_bad_macs,
            "totals": self.totals(),
            "pools": [asdict(p) for p in self.pools],
            "scopes": [asdict(s) for s in self.scopes],
            "vms": [{**asdict(vm), "nics": [_nic_dict(n) for n in vm.nics]} for vm in self.vms],
            "warnings": [_notice_dict(n) for n in self.warnings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        """The report back from :meth:`to_dict` (a background job keeps it as JSON)."""
        return cls(
            dry_run=bool(data["dry_run"]),
            reassign_bad_macs=bool(data["reassign_bad_macs"]),
            applied=bool(data["applied"]),
            pools=[PoolOutcome(**p) for p in data["pools"]],
            scopes=[ScopeOutcome(**s) for s in data["scopes"]],
            vms=[
                VmOutcome(**{**vm, "nics": [_nic_of(n) for n in vm["nics"]]}) for vm in data["vms"]
            ],
            warnings=[Notice(**{**w, "kind": NoticeKind(w["kind"])}) for w in data["warnings"]],
        )


def _nic_of(data: dict[str, Any]) -> NicOutcome:
    reason = data.get("reason")
    return NicOutcome(
        **{
            **data,
            "status": NicStatus(data["status"]),
            "reason": None if reason is None else BadReason(reason),
        }
    )


def _nic_dict(nic: NicOutcome) -> dict[str, Any]:
    data = asdict(nic)
    data["status"] = nic.status.value
    data["reason"] = None if nic.reason is None else nic.reason.value
    return data


def _notice_dict(notice: Notice) -> dict[str, Any]:
    data = asdict(notice)
    data["kind"] = notice.kind.value
    return data


def _nic_line(nic: NicOutcome) -> str:
    if nic.status is NicStatus.REASSIGNED:
        what = f"{nic.old_mac} -> {nic.mac}"
    elif nic.status is NicStatus.NEW:
        what = f"(none) -> {nic.mac}"
    else:
        what = nic.mac or nic.old_mac or "(none)"
    line = f"    {nic.status.value:<10} {nic.interface:<16} {what}"
    if nic.message:
        line += f"  {nic.message}"
    return line


def render_text(report: ImportReport) -> str:
    """The report for a terminal: per VM and NIC, then pools, scopes, warnings and totals."""
    mode = "dry run (nothing written)" if report.dry_run else "apply"
    lines = [f"oVirt import: {mode}"]
    if report.pools:
        lines.append("Pools:")
        lines += [
            f"  {p.status:<10} {p.name} [{', '.join(p.ranges) or 'no ranges'}]"
            + (" duplicates allowed" if p.allow_duplicates else "")
            + (f"  {p.message}" if p.message else "")
            for p in report.pools
        ]
    if report.scopes:
        lines.append("Scopes:")
        lines += [
            f"  {s.status:<10} {s.path} ({s.kind})"
            + (f" pool '{s.pool}'" if s.pool else "")
            + (f"  {s.message}" if s.message else "")
            for s in report.scopes
        ]
    if report.vms:
        lines.append("VMs:")
        for vm in report.vms:
            lines.append(f"  VM '{vm.name}' ({vm.id}) in {vm.scope}, pool '{vm.pool}'")
            lines += [_nic_line(nic) for nic in vm.nics]
    if report.warnings:
        lines.append(f"Warnings ({len(report.warnings)}):")
        lines += [f"  {locate(w.source, vm=w.vm, nic=w.nic)}: {w.message}" for w in report.warnings]
    totals = report.totals()
    lines.append(
        "Totals: "
        + ", ".join(f"{key} {value}" for key, value in totals.items() if key != "warnings")
    )
    if report.refused:
        lines.append(
            f"REFUSED: {len(report.conflicts)} NIC(s) have bad MACs; nothing was written. "
            "Fix them in oVirt or import with reassign_bad_macs (--reassign-bad-macs)."
        )
    elif report.applied:
        lines.append("Applied.")
    return "\n".join(lines)


__all__ = [
    "BadReason",
    "ImportReport",
    "NicOutcome",
    "NicStatus",
    "PoolOutcome",
    "ScopeOutcome",
    "VmOutcome",
    "render_text",
]
