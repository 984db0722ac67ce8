"""Typed, immutable records of what an oVirt export contains.

The readers produce these and nothing else: MACs are already normalized 48-bit integers, range
bounds are ordered, unicast and disjoint within a pool, and everything the readers had to fix
or could not keep is listed as a :class:`Notice`. The importer maps the records onto pools,
scopes and allocations without looking at any file again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from manager.core.mac import format_mac_int


class NoticeKind(StrEnum):
    """What a :class:`Notice` is about (stable machine codes for the import report)."""

    MAC_CASE = "mac_case"
    MAC_PADDING = "mac_padding"
    MAC_MISSING = "mac_missing"
    MAC_NOT_ASSIGNABLE = "mac_not_assignable"
    RANGE_REVERSED = "range_reversed"
    RANGE_MULTICAST = "range_multicast"
    RANGE_ZERO = "range_zero"
    RANGE_DROPPED = "range_dropped"
    RANGES_MERGED = "ranges_merged"
    POOL_WITHOUT_RANGES = "pool_without_ranges"
    DUPLICATE_NIC_NAME = "duplicate_nic_name"
    DUPLICATE_RECORD = "duplicate_record"
    VM_ID_MISMATCH = "vm_id_mismatch"
    SKIPPED = "skipped"
    POOL_RENAMED = "pool_renamed"
    POOL_SKIPPED = "pool_skipped"
    SCOPE_POOL_KEPT = "scope_pool_kept"
    UNKNOWN_REFERENCE = "unknown_reference"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the reader normalized or skipped; a warning in the report, never an error."""

    source: str
    kind: NoticeKind
    message: str
    vm: str | None = None
    nic: str | None = None
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class OvirtRange:
    """An inclusive MAC range ``[start, end]`` of 48-bit integers (normalized)."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{format_mac_int(self.start)}-{format_mac_int(self.end)}"


@dataclass(frozen=True, slots=True)
class OvirtPool:
    """One oVirt MAC pool with its normalized ranges (possibly none after normalization)."""

    id: str
    name: str
    description: str
    allow_duplicates: bool
    ranges: tuple[OvirtRange, ...]
    default_pool: bool
    source: str = ""


@dataclass(frozen=True, slots=True)
class OvirtDataCenter:
    """An oVirt data center; ``mac_pool_id`` is set only when all its clusters share one pool."""

    id: str
    name: str
    mac_pool_id: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class OvirtCluster:
    """An oVirt cluster and the pool it uses (``None`` means the default pool)."""

    id: str
    name: str
    data_center_id: str | None = None
    mac_pool_id: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class OvirtNic:
    """A VM NIC. ``mac`` is ``None`` when the NIC has no usable MAC and will get a new one;
    ``raw_mac`` is the value as written in the export (``None`` when absent)."""

    name: str
    mac: int | None
    raw_mac: str | None
    id: str | None = None
    network: str | None = None
    vnic_profile: str | None = None
    plugged: bool = True
    linked: bool = True

    @property
    def mac_text(self) -> str | None:
        """The normalized MAC in lower-case colon form, or ``None``."""
        return None if self.mac is None else format_mac_int(self.mac)


@dataclass(frozen=True, slots=True)
class OvirtVm:
    """A VM and its NICs; ``source`` is the file it was read from."""

    id: str
    name: str | None
    nics: tuple[OvirtNic, ...]
    source: str
    cluster_id: str | None = None
    cluster_name: str | None = None

    @property
    def label(self) -> str:
        """How reports name the VM: its name when known, else its id."""
        return self.name or self.id


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def _merge_vm(old: OvirtVm, new: OvirtVm) -> OvirtVm:
    # The same VM may come from an export domain and from an API export of its NICs: keep
    # every NIC once (same name and same MAC as written is the same NIC).
    seen = {(n.name, n.raw_mac) for n in old.nics}
    extra = tuple(n for n in new.nics if (n.name, n.raw_mac) not in seen)
    return replace(
        old,
        name=_first(old.name, new.name),
        nics=old.nics + extra,
        cluster_id=_first(old.cluster_id, new.cluster_id),
        cluster_name=_first(old.cluster_name, new.cluster_name),
    )


@dataclass(frozen=True, slots=True)
class OvirtExport:
    """Everything read from one or more inputs, plus the notices raised while reading."""

    pools: tuple[OvirtPool, ...] = ()
    data_centers: tuple[OvirtDataCenter, ...] = ()
    clusters: tuple[OvirtCluster, ...] = ()
    vms: tuple[OvirtVm, ...] = ()
    warnings: tuple[Notice, ...] = field(default=())

    @property
    def nic_count(self) -> int:
        """Number of NICs over all VMs."""
        return sum(len(vm.nics) for vm in self.vms)

    def merge(self, *others: OvirtExport) -> OvirtExport:
        """Combine several exports. Records with the same id are combined: pools, data centers
        and clusters keep the first one read (a differing later copy is reported), VMs are
        united (missing fields filled in, NICs added once)."""
        return merge_exports((self, *others))


_Record = TypeVar("_Record", OvirtPool, OvirtDataCenter, OvirtCluster)


def _keep_first(items: Iterable[_Record], kind: str, notices: list[Notice]) -> tuple[_Record, ...]:
    kept: dict[str, _Record] = {}
    for item in items:
        old = kept.get(item.id)
        if old is None:
            kept[item.id] = item
        elif replace(old, source="") != replace(item, source=""):
            notices.append(
                Notice(
                    source=item.source,
                    kind=NoticeKind.DUPLICATE_RECORD,
                    message=f"{kind} {item.id} ('{item.name}') was already read from "
                    f"{old.source} with different content; the first copy is kept.",
                )
            )
    return tuple(kept.values())


def merge_exports(exports: Iterable[OvirtExport]) -> OvirtExport:
    """Combine exports in order (see :meth:`OvirtExport.merge`)."""
    parts = list(exports)
    notices: list[Notice] = [n for part in parts for n in part.warnings]
    pools = _keep_first((p for part in parts for p in part.pools), "MAC pool", notices)
    dcs = _keep_first((d for part in parts for d in part.data_centers), "Data center", notices)
    clusters = _keep_first((c for part in parts for c in part.clusters), "Cluster", notices)
    vms: dict[str, OvirtVm] = {}
    for part in parts:
        for vm in part.vms:
            old = vms.get(vm.id)
            vms[vm.id] = vm if old is None else _merge_vm(old, vm)
    return OvirtExport(
        pools=pools,
        data_centers=dcs,
        clusters=clusters,
        vms=tuple(vms.values()),
        warnings=tuple(notices),
    )


__all__ = [
    "Notice",
    "NoticeKind",
    "OvirtCluster",
    "OvirtDataCenter",
    "OvirtExport",
    "OvirtNic",
    "OvirtPool",
    "OvirtRange",
    "OvirtVm",
    "merge_exports",
]
