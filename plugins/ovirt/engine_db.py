"""The oVirt engine database tables that hold MAC pools and VM NICs, read from COPY rows into
the same records every other reader produces.

Columns are looked up by name in each table's ``COPY`` column list, never by position, so the
schemas of engines 3.6 to 4.5 read alike:

- 3.6–4.0: the data center owns the pool (``storage_pool.mac_pool_id``); clusters have none and
  inherit it. Engines before 4.0 call the cluster table ``vds_groups`` (key ``vds_group_id``,
  also in ``vm_static``).
- 4.1+: every cluster names its pool (``cluster.mac_pool_id``); a data center's pool is the
  one all its clusters share, as the engine's API derives it.
- Before 4.4 template NICs have ``vm_interface.vm_guid`` NULL (``vmt_guid`` names the
  template); since 4.4 they point at the template's ``vm_static`` row.

Only ``vm_static`` rows with ``entity_type = 'VM'`` are VMs. Templates, instance types and
their NICs are skipped, and the report says how many and why. Snapshots are not read: their
saved configurations are copies of a VM's NICs, not NICs of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.macs import normalize_ranges, read_nic_mac
from plugins.ovirt.pgcopy import CopyBlock, CopyRow
from plugins.ovirt.records import (
    Notice,
    NoticeKind,
    OvirtCluster,
    OvirtDataCenter,
    OvirtExport,
    OvirtNic,
    OvirtPool,
    OvirtRange,
    OvirtVm,
)

#: The tables read from an engine dump (both names of the cluster table).
TABLES = (
    "mac_pools",
    "mac_pool_ranges",
    "storage_pool",
    "cluster",
    "vds_groups",
    "vm_static",
    "vm_interface",
)
#: Required columns per table; a tuple lists the names one column had across versions.
_REQUIRED: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "mac_pools": ("id", "name", "allow_duplicate_mac_addresses", "default_pool"),
    "mac_pool_ranges": ("mac_pool_id", "from_mac", "to_mac"),
    "storage_pool": ("id", "name"),
    "cluster": (("cluster_id", "vds_group_id"), "name", "storage_pool_id"),
    "vds_groups": (("vds_group_id", "cluster_id"), "name", "storage_pool_id"),
    "vm_static": ("vm_guid", "vm_name", ("cluster_id", "vds_group_id")),
    "vm_interface": ("id", "vm_guid", "mac_addr", "name"),
}
_VM = "VM"
_SHOWN = 5
_SNAPSHOTS = (
    "Snapshots are not VMs: NIC configurations saved in snapshots (table snapshots) are not "
    "read; each VM's current NICs are imported."
)

Where = Callable[[CopyRow], str]


def _column(block: CopyBlock, names: str | tuple[str, ...]) -> str | None:
    for name in (names,) if isinstance(names, str) else names:
        if name in block.columns:
            return name
    return None


@dataclass(slots=True)
class _Nic:
    where: str
    vm_guid: str | None
    template_guid: str | None
    id: str | None
    name: str
    mac: str | None
    linked: str | None
    profile: str | None


@dataclass(slots=True)
class EngineTables:
    """Collects the rows of :data:`TABLES` (in any order) and turns them into an export."""

    source: str
    pools: list[tuple[CopyRow, str]] = field(default_factory=list)
    ranges: list[tuple[CopyRow, str]] = field(default_factory=list)
    data_centers: list[tuple[CopyRow, str]] = field(default_factory=list)
    clusters: list[tuple[CopyRow, str]] = field(default_factory=list)
    vms: list[tuple[str, str, str | None, str, str | None]] = field(default_factory=list)
    nics: list[_Nic] = field(default_factory=list)
    seen: dict[str, CopyBlock] = field(default_factory=dict)

    def _check(self, block: CopyBlock) -> None:
        if block.table in self.seen:
            return
        self.seen[block.table] = block
        missing = [
            "/".join((name,) if isinstance(name, str) else name)
            for name in _REQUIRED[block.table]
            if _column(block, name) is None
        ]
        if missing:
            raise OvirtExportError(
                f"table {block.table} (COPY at line {block.line}) has no column "
                f"{', '.join(missing)}; this is not an oVirt engine 3.6-4.5 database.",
                source=self.source,
            )

    def add(self, row: CopyRow, where: str) -> None:
        """Keep one row (only the fields the import needs, for the tables of records)."""
        table = row.block.table
        self._check(row.block)
        if table == "mac_pools":
            self.pools.append((row, where))
        elif table == "mac_pool_ranges":
            self.ranges.append((row, where))
        elif table == "storage_pool":
            self.data_centers.append((row, where))
        elif table in ("cluster", "vds_groups"):
            self.clusters.append((row, where))
        elif table == "vm_static":
            self.vms.append(
                (
                    _required(row, "vm_guid", where),
                    row.get("vm_name") or "",
                    _cluster_of(row, ("cluster_id", "vds_group_id")),
                    where,
                    row.get("entity_type") if "entity_type" in row.block.columns else _VM,
                )
            )
        elif table == "vm_interface":
            self.nics.append(
                _Nic(
                    where=where,
                    vm_guid=row.get("vm_guid"),
                    template_guid=row.get("vmt_guid"),
                    id=row.get("id"),
                    name=row.get("name") or "",
                    mac=row.get("mac_addr"),
                    linked=row.get("linked"),
                    profile=row.get("vnic_profile_id"),
                )
            )

    def note_block(self, block: CopyBlock) -> None:
        """Check the columns of a table even when it has no rows."""
        if block.table in _REQUIRED:
            self._check(block)

    def export(self) -> OvirtExport:
        """The records, after checking that this is an engine database of 3.6 or later."""
        if "vm_static" not in self.seen or "vm_interface" not in self.seen:
            raise OvirtExportError(
                "the dump holds no vm_static/vm_interface table data: it is not a dump of "
                "an oVirt engine database.",
                source=self.source,
            )
        if "mac_pools" not in self.seen:
            raise OvirtExportError(
                "the dump has no mac_pools table: MAC pools were introduced in oVirt 3.6, so "
                "this engine is older; upgrade it (or import its OVF exports) first.",
                source=self.source,
            )
        notices: list[Notice] = []
        pools = self._pools(notices)
        clusters = self._clusters()
        data_centers = self._data_centers(clusters)
        vms = self._vms(clusters, notices)
        return OvirtExport(
            pools=tuple(pools),
            data_centers=tuple(data_centers),
            clusters=tuple(clusters.values()),
            vms=tuple(vms),
            warnings=tuple(notices),
        )

    def _pools(self, notices: list[Notice]) -> list[OvirtPool]:
        raw: dict[str, list[tuple[str | None, str | None, str]]] = {}
        for row, where in self.ranges:
            pool_id = _required(row, "mac_pool_id", where)
            raw.setdefault(pool_id, []).append((row.get("from_mac"), row.get("to_mac"), where))
        pools = []
        for row, where in self.pools:
            pool_id = _required(row, "id", where)
            name = row.get("name") or ""
            rows = raw.pop(pool_id, [])
            ranges, range_notices = _ranges(rows, source=where, pool=name)
            notices += range_notices
            pools.append(
                OvirtPool(
                    id=pool_id,
                    name=name,
                    description=row.get("description") or "",
                    allow_duplicates=_bool(row, "allow_duplicate_mac_addresses", where),
                    ranges=ranges,
                    default_pool=_bool(row, "default_pool", where),
                    source=where,
                )
            )
        for pool_id, rows in raw.items():
            notices.append(
                Notice(
                    rows[0][2],
                    NoticeKind.UNKNOWN_REFERENCE,
                    f"{len(rows)} range(s) of MAC pool {pool_id}, which is not in mac_pools; "
                    "skipped.",
                )
            )
        return pools

    def _clusters(self) -> dict[str, OvirtCluster]:
        clusters = {}
        for row, where in self.clusters:
            key = _column(row.block, ("cluster_id", "vds_group_id")) or "cluster_id"
            cluster_id = _required(row, key, where)
            clusters[cluster_id] = OvirtCluster(
                id=cluster_id,
                name=row.get("name") or cluster_id,
                data_center_id=row.get("storage_pool_id"),
                mac_pool_id=row.get("mac_pool_id"),
                source=where,
            )
        return clusters

    def _data_centers(self, clusters: dict[str, OvirtCluster]) -> list[OvirtDataCenter]:
        # 4.1+: a data center shows the pool all of its clusters share (the engine derives it).
        shared: dict[str, set[str | None]] = {}
        for cluster in clusters.values():
            if cluster.data_center_id:
                shared.setdefault(cluster.data_center_id, set()).add(cluster.mac_pool_id)
        data_centers = []
        for row, where in self.data_centers:
            dc_id = _required(row, "id", where)
            pool_id = row.get("mac_pool_id")
            if "mac_pool_id" not in row.block.columns:
                pools = shared.get(dc_id, set())
                pool_id = next(iter(pools)) if len(pools) == 1 else None
            data_centers.append(
                OvirtDataCenter(
                    id=dc_id, name=row.get("name") or dc_id, mac_pool_id=pool_id, source=where
                )
            )
        return data_centers

    def _vms(self, clusters: dict[str, OvirtCluster], notices: list[Notice]) -> list[OvirtVm]:
        kinds = {vm_id: (name, kind) for vm_id, name, _, _, kind in self.vms}
        by_vm: dict[str, list[_Nic]] = {}
        templates = Counter[str]()
        loose: list[_Nic] = []
        orphans: list[_Nic] = []
        for nic in self.nics:
            owner = kinds.get(nic.vm_guid or "")
            if nic.vm_guid is None:
                loose.append(nic)
            elif owner is None:
                orphans.append(nic)
            elif owner[1] != _VM:
                templates[owner[1] or "?"] += 1
            else:
                by_vm.setdefault(nic.vm_guid, []).append(nic)
        vms = []
        for vm_id, name, cluster_id, where, kind in self.vms:
            if kind != _VM:
                continue
            label = name or vm_id
            nics: list[OvirtNic] = []
            for nic in by_vm.get(vm_id, []):
                mac, nic_notices = read_nic_mac(nic.mac, source=nic.where, vm=label, nic=nic.name)
                notices += nic_notices
                nics.append(
                    OvirtNic(
                        name=nic.name,
                        mac=mac,
                        raw_mac=nic.mac,
                        id=nic.id,
                        vnic_profile=nic.profile,
                        linked=nic.linked != "f",
                    )
                )
            cluster = clusters.get(cluster_id or "")
            vms.append(
                OvirtVm(
                    id=vm_id,
                    name=name or None,
                    nics=tuple(nics),
                    source=where,
                    cluster_id=cluster_id,
                    cluster_name=None if cluster is None else cluster.name,
                )
            )
        notices += self._skipped(templates, loose, orphans)
        return vms

    def _skipped(
        self, template_nics: Counter[str], loose: list[_Nic], orphans: list[_Nic]
    ) -> list[Notice]:
        notices = []
        others: dict[str, list[str]] = {}
        for _, name, _, _, kind in self.vms:
            if kind != _VM:
                others.setdefault(kind or "?", []).append(name)
        for kind, names in sorted(others.items()):
            what = kind.lower().replace("_", " ")
            shown = ", ".join(f"'{n}'" for n in names[:_SHOWN])
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            notices.append(
                Notice(
                    self.source,
                    NoticeKind.SKIPPED,
                    f"Skipped {len(names)} {what}(s) ({shown}{more}) and their "
                    f"{template_nics.get(kind, 0)} NIC(s): vm_static rows with entity_type "
                    f"{kind} are not VMs, and their NICs hold no MACs in use.",
                )
            )
        if loose:
            notices.append(
                Notice(
                    self.source,
                    NoticeKind.SKIPPED,
                    f"Skipped {len(loose)} NIC(s) with no VM (vm_interface rows whose vm_guid "
                    "is NULL: template NICs of engines before 4.4), first at "
                    f"{loose[0].where}.",
                )
            )
        if orphans:
            notices.append(
                Notice(
                    self.source,
                    NoticeKind.UNKNOWN_REFERENCE,
                    f"Skipped {len(orphans)} NIC(s) whose VM is not in vm_static, first at "
                    f"{orphans[0].where} (VM {orphans[0].vm_guid}).",
                )
            )
        notices.append(Notice(self.source, NoticeKind.SKIPPED, _SNAPSHOTS))
        return notices


def _required(row: CopyRow, column: str, where: str) -> str:
    value = row.get(column)
    if not value:
        raise OvirtExportError(f"column {column} is empty.", source=where)
    return value


def _cluster_of(row: CopyRow, names: tuple[str, ...]) -> str | None:
    column = _column(row.block, names)
    return None if column is None else row.get(column)


def _bool(row: CopyRow, column: str, where: str) -> bool:
    value = row.get(column)
    if value in ("t", "f"):
        return value == "t"
    raise OvirtExportError(
        f"column {column} is {value!r}, expected a boolean ('t' or 'f').", source=where
    )


def _ranges(
    rows: Iterable[tuple[str | None, str | None, str]], *, source: str, pool: str
) -> tuple[tuple[OvirtRange, ...], list[Notice]]:
    listed = list(rows)
    try:
        return normalize_ranges([(f, t) for f, t, _ in listed], source=source, pool=pool)
    except OvirtExportError:
        # Name the range's own row: the same rule, applied to each row alone, raises there.
        for start, end, where in listed:
            normalize_ranges([(start, end)], source=where, pool=pool)
        raise


__all__ = ["TABLES", "EngineTables"]
