"""Small builders of oVirt export records and database counters for the import tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core import parse_mac
from manager.core.actor import Actor
from manager.db import Allocation, AuditEvent, Pool, Scope
from plugins.ovirt.importer import ImportOptions, run_import
from plugins.ovirt.records import (
    OvirtCluster,
    OvirtDataCenter,
    OvirtExport,
    OvirtNic,
    OvirtPool,
    OvirtRange,
    OvirtVm,
)
from plugins.ovirt.report import ImportReport

SOURCE = "export.xml"


def mac(text: str) -> int:
    return int(parse_mac(text))


def pool(
    pool_id: str,
    name: str,
    *ranges: str,
    allow_duplicates: bool = False,
    default: bool = False,
) -> OvirtPool:
    """An oVirt pool with ranges given as 'START-END'."""
    parsed = []
    for text in ranges:
        start, end = text.split("-")
        parsed.append(OvirtRange(mac(start), mac(end)))
    return OvirtPool(
        id=pool_id,
        name=name,
        description="",
        allow_duplicates=allow_duplicates,
        ranges=tuple(parsed),
        default_pool=default,
        source=SOURCE,
    )


def dc(dc_id: str, name: str, pool_id: str | None = None) -> OvirtDataCenter:
    return OvirtDataCenter(dc_id, name, pool_id, SOURCE)


def cluster(
    cluster_id: str, name: str, *, dc_id: str | None = None, pool_id: str | None = None
) -> OvirtCluster:
    return OvirtCluster(cluster_id, name, dc_id, pool_id, SOURCE)


def vm(
    vm_id: str,
    name: str,
    *macs: str | None,
    cluster_id: str | None = None,
    cluster_name: str | None = None,
) -> OvirtVm:
    """A VM with NICs nic1, nic2, … carrying the given MACs (``None``: no MAC)."""
    nics = tuple(
        OvirtNic(name=f"nic{i}", mac=None if m is None else mac(m), raw_mac=m)
        for i, m in enumerate(macs, start=1)
    )
    return OvirtVm(
        id=vm_id,
        name=name,
        nics=nics,
        source=f"{vm_id}.ovf",
        cluster_id=cluster_id,
        cluster_name=cluster_name,
    )


def export(**parts: Any) -> OvirtExport:
    return OvirtExport(**{k: tuple(v) for k, v in parts.items()})


def run(session: Session, actor: Actor, data: OvirtExport, **options: Any) -> ImportReport:
    return run_import(session, actor, data, options=ImportOptions(**options))


def counts(session: Session) -> dict[str, int]:
    """Rows per table that an import may write."""
    return {
        model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
        for model in (Pool, Scope, Allocation, AuditEvent)
    }


def nic_rows(report: ImportReport) -> list[tuple[str, str, str, str | None, str | None]]:
    """(vm, interface, status, mac, old_mac) per NIC of the report."""
    return [
        (v.name, n.interface, n.status.value, n.mac, n.old_mac) for v in report.vms for n in v.nics
    ]
