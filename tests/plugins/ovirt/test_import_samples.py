"""Every shared oVirt sample imported, dry run then apply, with the report checked."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.db import Allocation, Pool, Scope
from plugins.ovirt.importer import ImportRefused
from plugins.ovirt.reader import read_paths
from plugins.ovirt.records import NoticeKind

from .conftest import sample
from .factories import counts, nic_rows, run

POOLS = "api/get-macpools-list-constructed.xml"


@pytest.mark.parametrize(
    ("files", "pools", "warnings"),
    [
        (
            [POOLS],
            [("ovirt-Default", "created"), ("cluster-east", "created")],
            {NoticeKind.POOL_RENAMED},
        ),
        (
            ["api/get-macpools-list-constructed.json"],
            [("ovirt-Default", "created"), ("cluster-east", "created")],
            {NoticeKind.POOL_RENAMED},
        ),
        (
            ["api/get-macpool-api-model-doc-example.xml"],
            [("ovirt-Default", "created")],
            {NoticeKind.MAC_CASE, NoticeKind.POOL_RENAMED},
        ),
        (["api/post-macpools-request.xml"], [("MACPool", "created")], {NoticeKind.MAC_CASE}),
        (["api/put-macpool-request.xml"], [("UpdatedMACPool", "created")], {NoticeKind.MAC_CASE}),
    ],
)
def test_pool_samples(
    import_session: Session,
    actor: Actor,
    files: list[str],
    pools: list[tuple[str, str]],
    warnings: set[NoticeKind],
) -> None:
    export = read_paths([sample(f) for f in files])
    before = counts(import_session)
    dry = run(import_session, actor, export)
    assert [(p.name, p.status) for p in dry.pools] == pools
    assert {w.kind for w in dry.warnings} == warnings
    assert counts(import_session) == before
    applied = run(import_session, actor, export, dry_run=False)
    assert applied.applied and applied.to_dict()["pools"] == dry.to_dict()["pools"]
    names = set(import_session.scalars(select(Pool.name)))
    assert {name for name, _ in pools} <= names
    again = run(import_session, actor, export, dry_run=False)
    assert {p.status for p in again.pools} == {"unchanged"}


def test_cluster_sample_with_its_pools_and_a_vm(import_session: Session, actor: Actor) -> None:
    export = read_paths(
        [
            sample(POOLS),
            sample("api/get-clusters-cluster-references-mac_pool.xml"),
            sample("ovf/engine-4.2-ovfstore-hostedengine.ovf"),
        ]
    )
    dry = run(import_session, actor, export)
    assert [(s.path, s.kind, s.status, s.pool) for s in dry.scopes] == [
        ("/Default", "cluster", "created", "ovirt-Default")
    ]
    # The VM's OVF names cluster 'Default': it lands there, its MAC is outside that pool.
    assert nic_rows(dry) == [("HostedEngine", "vnet0", "conflict", "00:16:3e:6a:7a:f9", None)]
    assert dry.vms[0].scope == "/Default" and dry.refused
    with pytest.raises(ImportRefused):
        run(import_session, actor, export, dry_run=False)
    applied = run(import_session, actor, export, dry_run=False, reassign_bad_macs=True)
    assert nic_rows(applied) == [
        ("HostedEngine", "vnet0", "reassigned", "56:6f:3c:9e:00:00", "00:16:3e:6a:7a:f9")
    ]
    row = import_session.execute(
        select(Allocation.owner_uid, Scope.path).join(Scope, Scope.id == Allocation.scope_id)
    ).one()
    assert tuple(row) == ("eccb9cb6-affd-4806-8200-708370581227", "/Default")


def test_clusters_sample_alone_warns_about_the_missing_pool(
    import_session: Session, actor: Actor
) -> None:
    export = read_paths([sample("api/get-clusters-cluster-references-mac_pool.xml")])
    report = run(import_session, actor, export, dry_run=False)
    assert [(s.path, s.pool) for s in report.scopes] == [("/Default", None)]
    assert [w.kind for w in report.warnings] == [NoticeKind.UNKNOWN_REFERENCE]


@pytest.mark.parametrize(
    ("file", "rows"),
    [
        (
            "ovf/engine-4.2-ovfstore-hostedengine.ovf",
            [("HostedEngine", "vnet0", "reassigned", "0a:00:00:00:00:00", "00:16:3e:6a:7a:f9")],
        ),
        (
            "ovf/engine-hostedengine-two-nics.ovf",
            [
                ("HostedEngine", "nic1", "reassigned", "0a:00:00:00:00:00", "00:16:3e:43:ed:b5"),
                ("HostedEngine", "nic1#2", "reassigned", "0a:00:00:00:00:01", "00:16:3e:43:ed:b6"),
            ],
        ),
        (
            "ovf/engine-testdata-ova-import-nic-without-mac.ovf",
            [("sevenofnine", "eth0", "new", "0a:00:00:00:00:00", None)],
        ),
        (
            "ovf/virt-v2v-o-ovirt-export-domain.ovf",
            [("windows", "eth0", "reassigned", "0a:00:00:00:00:00", "00:11:22:33:44:55")],
        ),
        (
            "ovf/vmware-ova-nic-without-mac.ovf",
            [("TestOva", "Ethernet 1", "new", "0a:00:00:00:00:00", None)],
        ),
        (
            "api/get-vm-nics-mac-address.xml",
            [
                (
                    "8070fa6d-5b82-412c-9d41-a00017205c73",
                    "nic1",
                    "reassigned",
                    "0a:00:00:00:00:00",
                    "00:1a:4a:16:01:04",
                )
            ],
        ),
    ],
)
def test_vm_samples_into_a_chosen_scope(
    import_session: Session, actor: Actor, file: str, rows: list[tuple[str, ...]]
) -> None:
    export = read_paths([sample(file)])
    dry = run(import_session, actor, export, scope="/")
    # Without reassignment the sample MACs (outside MacPool's default pool) are conflicts.
    assert {r[2] for r in nic_rows(dry)} <= {"conflict", "new"}
    assert dry.refused == any(r[2] == "reassigned" for r in rows)
    before = counts(import_session)
    applied = run(import_session, actor, export, scope="/", dry_run=False, reassign_bad_macs=True)
    assert nic_rows(applied) == rows
    assert counts(import_session)["allocations"] == before["allocations"] + len(rows)
    again = run(import_session, actor, export, scope="/", dry_run=False, reassign_bad_macs=True)
    assert {r[2] for r in nic_rows(again)} == {"unchanged"}
