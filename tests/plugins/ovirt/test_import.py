"""The importer on generated exports: mapping, bad MACs, overlaps, idempotence, atomicity.

Runs on SQLite and, when MACPOOL_TEST_POSTGRES_URL is set, on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InvalidScope, NameInUse, RangeOverlap
from manager.db import Allocation, AuditEvent, Pool, Scope
from manager.services import allocate_mac, create_pool, create_scope, find_pool_by_name
from manager.services import bulk_allocations as bulk_module
from plugins.ovirt.importer import ImportRefused
from plugins.ovirt.records import NoticeKind

from .factories import cluster, counts, dc, export, nic_rows, pool, run, vm

EAST = pool("p-east", "east", "02:00:00:00:00:00-02:00:00:00:00:ff")
SHARED = pool("p-shared", "shared", "02:00:00:01:00:00-02:00:00:01:00:ff", allow_duplicates=True)
OVIRT_DEFAULT = pool("p-default", "Default", "02:00:00:02:00:00-02:00:00:02:00:ff", default=True)


def estate(*vms: object) -> dict[str, object]:
    """One data center using 'east', a cluster inheriting it and one using 'shared'."""
    return {
        "pools": [EAST, SHARED, OVIRT_DEFAULT],
        "data_centers": [dc("dc-1", "dc1", "p-east")],
        "clusters": [
            cluster("c-1", "c1", dc_id="dc-1"),
            cluster("c-2", "c2", dc_id="dc-1", pool_id="p-shared"),
            cluster("c-3", "lonely"),
        ],
        "vms": list(vms),
    }


def test_mapping_pools_scopes_and_allocations(import_session: Session, actor: Actor) -> None:
    data = export(
        **estate(
            vm("v-1", "web", "02:00:00:00:00:10", None, cluster_id="c-1"),
            vm("v-2", "db", "02:00:00:01:00:01", cluster_name="c2"),
            vm("v-3", "misc", None, cluster_id="c-3"),
        )
    )
    before = counts(import_session)
    report = run(import_session, actor, data)
    assert counts(import_session) == before  # a dry run writes nothing
    assert not report.refused and not report.applied
    assert [(p.name, p.status) for p in report.pools] == [
        ("east", "created"),
        ("shared", "created"),
        ("ovirt-Default", "created"),  # MacPool's 'Default' has other ranges
    ]
    assert [(s.path, s.kind, s.status, s.pool) for s in report.scopes] == [
        ("/dc1", "datacenter", "created", "east"),
        ("/dc1/c1", "cluster", "created", None),
        ("/dc1/c2", "cluster", "created", "shared"),
        ("/lonely", "cluster", "created", "ovirt-Default"),  # no pool anywhere: oVirt's default
    ]
    assert nic_rows(report) == [
        ("web", "nic1", "kept", "02:00:00:00:00:10", None),
        ("web", "nic2", "new", "02:00:00:00:00:00", None),
        ("db", "nic1", "kept", "02:00:00:01:00:01", None),
        ("misc", "nic1", "new", "02:00:00:02:00:00", None),
    ]
    assert [(v.scope, v.pool) for v in report.vms] == [
        ("/dc1/c1", "east"),
        ("/dc1/c2", "shared"),
        ("/lonely", "ovirt-Default"),
    ]
    assert any(w.kind is NoticeKind.POOL_RENAMED for w in report.warnings)

    applied = run(import_session, actor, data, dry_run=False)
    assert applied.applied and applied.to_dict()["vms"] == report.to_dict()["vms"]
    rows = import_session.execute(
        select(
            Allocation.owner_kind,
            Allocation.owner_name,
            Allocation.owner_uid,
            Allocation.interface,
            Scope.path,
        ).join(Scope, Scope.id == Allocation.scope_id)
    ).all()
    assert ("ovirt-vm", "web", "v-1", "nic1", "/dc1/c1") in rows and len(rows) == 4
    event = import_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "import.ovirt")
    ).one()
    assert event.details["totals"]["kept"] == 2 and event.details["totals"]["new"] == 2


def test_default_pool_merges_when_identical(import_session: Session, actor: Actor) -> None:
    same = pool("p-d", "default", "0a:00:00:00:00:00-0a:00:00:ff:ff:ff", default=True)
    report = run(import_session, actor, export(pools=[same]), dry_run=False)
    assert [(p.name, p.status) for p in report.pools] == [("Default", "merged")]
    assert [p.name for p in import_session.scalars(select(Pool))] == ["Default"]


def test_mac_held_by_a_kubevirt_vm_refuses_the_import(
    import_session: Session, actor: Actor
) -> None:
    create_scope(import_session, actor, kind="cluster", name="ocp")
    taken = allocate_mac(
        import_session,
        actor,
        scope="/ocp",
        owner=Owner("vm", "ns/kv-1"),
        interface="default",
        mac="02:00:00:00:00:20",
    )
    assert taken.created
    data = export(
        **estate(vm("v-1", "web", "02:00:00:00:00:20", "02:00:00:00:00:21", cluster_id="c-1"))
    )
    before = counts(import_session)
    report = run(import_session, actor, data)
    assert report.refused
    ((vm_out, nic),) = report.conflicts
    assert (vm_out.name, nic.name, nic.mac, nic.reason) == (
        "web",
        "nic1",
        "02:00:00:00:00:20",
        "in_use",
    )
    assert nic.holders == ["vm 'ns/kv-1' interface 'default' in scope /ocp (pool 'Default')"]
    with pytest.raises(
        ImportRefused,
        match=r"v-1\.ovf, VM 'web', NIC 'nic1': 02:00:00:00:00:20 is already in use by vm 'ns/kv-1'",
    ) as refused:
        run(import_session, actor, data, dry_run=False)
    assert refused.value.details["report"]["refused"] is True
    assert counts(import_session) == before

    fixed = run(import_session, actor, data, dry_run=False, reassign_bad_macs=True)
    assert nic_rows(fixed)[0] == (
        "web",
        "nic1",
        "reassigned",
        "02:00:00:00:00:00",
        "02:00:00:00:00:20",
    )
    assert nic_rows(fixed)[1][2] == "kept"


def test_mac_outside_the_target_pool(import_session: Session, actor: Actor) -> None:
    data = export(**estate(vm("v-1", "web", "02:00:00:05:00:01", cluster_id="c-1")))
    ((_, nic),) = run(import_session, actor, data).conflicts
    assert nic.reason == "outside_pool"
    assert "outside the ranges of pool 'east' (02:00:00:00:00:00-02:00:00:00:00:ff)" in nic.message
    report = run(import_session, actor, data, reassign_bad_macs=True)
    assert nic_rows(report) == [
        ("web", "nic1", "reassigned", "02:00:00:00:00:00", "02:00:00:05:00:01")
    ]


@pytest.mark.parametrize(
    ("existing_dups", "imported_into", "status"),
    [
        (True, "c-2", "kept"),  # both pools allow duplicates
        (False, "c-2", "conflict"),  # the holder's pool refuses
        (True, "c-1", "conflict"),  # the importing pool refuses
    ],
)
def test_duplicates_need_both_sides_to_allow_them(
    import_session: Session, actor: Actor, existing_dups: bool, imported_into: str, status: str
) -> None:
    other = create_pool(
        import_session,
        actor,
        name="kube",
        ranges=["02:00:00:09:00:00-02:00:00:09:00:ff"],
        allow_duplicates=existing_dups,
    )
    create_scope(import_session, actor, kind="cluster", name="ocp", pool_id=other.id)
    # A MAC inside 'shared' and inside 'east' for the two target clusters.
    wanted = "02:00:00:01:00:05" if imported_into == "c-2" else "02:00:00:00:00:05"
    allocate_mac(
        import_session, actor, scope="/ocp", owner=Owner("vm", "kv"), interface="eth0", mac=wanted
    )
    data = export(**estate(vm("v-1", "web", wanted, cluster_id=imported_into)))
    report = (
        run(import_session, actor, data, dry_run=False)
        if status == "kept"
        else run(import_session, actor, data)
    )
    assert nic_rows(report)[0][2] == status
    if status == "kept":
        holders = import_session.scalars(
            select(Allocation.owner_name).where(Allocation.mac == 0x020000010005)
        ).all()
        assert sorted(holders) == ["kv", "web"]


def test_duplicate_mac_inside_the_export(import_session: Session, actor: Actor) -> None:
    data = export(
        **estate(
            vm("v-1", "a", "02:00:00:00:00:30", cluster_id="c-1"),
            vm("v-2", "b", "02:00:00:00:00:30", cluster_id="c-1"),
        )
    )
    ((vm_out, nic),) = run(import_session, actor, data).conflicts
    assert vm_out.name == "b"
    assert nic.holders == [
        "ovirt-vm 'a' interface 'nic1' in scope /dc1/c1 (pool 'east', this import)"
    ]


def test_overlapping_imported_range_names_both_pools(import_session: Session, actor: Actor) -> None:
    create_pool(import_session, actor, name="lab", ranges=["02:00:00:00:00:80-02:00:00:00:01:ff"])
    before = counts(import_session)
    with pytest.raises(
        RangeOverlap,
        match=r"^export\.xml, MAC pool 'east': Range 02:00:00:00:00:00-02:00:00:00:00:ff overlaps pool 'lab'",
    ):
        run(import_session, actor, export(**estate()), dry_run=False)
    assert counts(import_session) == before


def test_same_pool_name_with_other_ranges_is_refused(import_session: Session, actor: Actor) -> None:
    create_pool(import_session, actor, name="EAST", ranges=["02:00:00:07:00:00-02:00:00:07:00:ff"])
    with pytest.raises(NameInUse, match="a pool named 'EAST' already exists with other ranges"):
        run(import_session, actor, export(**estate()))


def test_missing_macs_get_new_ones_and_warnings_reach_the_report(
    import_session: Session, actor: Actor
) -> None:
    from plugins.ovirt.generate import vm_ovf
    from plugins.ovirt.reader import read_upload

    text = vm_ovf(vm_id="11111111-1111-4111-8111-111111111111", name="x", macs=[0x0A0000000010])
    text = text.replace("0a:00:00:00:00:10", "0A:0:0:0:0:10", 1)
    text += ""  # same VM, upper case and unpadded MAC
    data = read_upload("x.ovf", text.encode())
    report = run(import_session, actor, data, scope="/")
    assert nic_rows(report) == [("x", "nic1", "kept", "0a:00:00:00:00:10", None)]
    assert {w.kind for w in report.warnings} == {NoticeKind.MAC_CASE, NoticeKind.MAC_PADDING}
    empty = read_upload(
        "y.ovf",
        vm_ovf(vm_id="22222222-2222-4222-8222-222222222222", name="y", macs=[1])
        .replace("00:00:00:00:00:01", "")
        .encode(),
    )
    report = run(import_session, actor, empty, scope="/")
    assert nic_rows(report) == [("y", "nic1", "new", "0a:00:00:00:00:00", None)]
    assert [w.kind for w in report.warnings] == [NoticeKind.MAC_MISSING]


def test_reimport_changes_nothing(import_session: Session, actor: Actor) -> None:
    create_scope(import_session, actor, kind="cluster", name="ocp")
    allocate_mac(
        import_session,
        actor,
        scope="/ocp",
        owner=Owner("vm", "kv"),
        interface="e",
        mac="02:00:00:00:00:40",
    )
    data = export(
        **estate(
            vm("v-1", "web", "02:00:00:00:00:40", None, cluster_id="c-1"),
            vm("v-2", "db", "02:00:00:01:00:01", cluster_id="c-2"),
        )
    )
    first = run(import_session, actor, data, dry_run=False, reassign_bad_macs=True)
    assert [r[2] for r in nic_rows(first)] == ["reassigned", "new", "kept"]
    before = counts(import_session)
    again = run(import_session, actor, data, dry_run=False, reassign_bad_macs=True)
    assert [r[2] for r in nic_rows(again)] == ["unchanged", "unchanged", "unchanged"]
    assert [r[3] for r in nic_rows(again)] == [r[3] for r in nic_rows(first)]
    assert {p.status for p in again.pools} == {"unchanged"}
    assert {s.status for s in again.scopes} == {"unchanged"}
    after = counts(import_session)
    assert after == {**before, "audit_events": before["audit_events"] + 1}  # only import.ovirt
    # Without reassign_bad_macs the NIC whose MAC was replaced is a conflict, not a silent change.
    assert nic_rows(run(import_session, actor, data))[0][2] == "conflict"


def test_failure_in_the_middle_leaves_nothing(
    import_session: Session, actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bulk_module.insert_audit

    def flaky(*args: object, **kwargs: object) -> None:
        # The pools, scopes, held MACs and allocations are written by now.
        assert import_session.scalar(select(func.count()).select_from(Allocation)) == 5
        raise RuntimeError("database went away")

    monkeypatch.setattr(bulk_module, "insert_audit", flaky)
    data = export(
        **estate(
            *(vm(f"v-{i}", f"vm{i}", f"02:00:00:00:00:{i:02x}", cluster_id="c-1") for i in range(5))
        )
    )
    before = counts(import_session)
    with pytest.raises(RuntimeError):
        run(import_session, actor, data, dry_run=False)
    assert counts(import_session) == before
    assert import_session.scalars(select(Pool).where(Pool.name == "east")).first() is None
    monkeypatch.setattr(bulk_module, "insert_audit", real)
    assert run(import_session, actor, data, dry_run=False).totals()["kept"] == 5


def test_vms_without_a_cluster_need_a_scope(import_session: Session, actor: Actor) -> None:
    data = export(vms=[vm("v-1", "solo", "0a:00:00:00:00:01")])
    with pytest.raises(
        InvalidScope, match=r"1 VM\(s\) belong to no cluster .*v-1\.ovf, VM 'solo'.*--scope"
    ):
        run(import_session, actor, data)
    report = run(import_session, actor, data, scope="/", dry_run=False)
    assert nic_rows(report) == [("solo", "nic1", "kept", "0a:00:00:00:00:01", None)]
    assert find_pool_by_name(import_session, "Default").held_count == 1


def test_two_vms_with_one_name_in_one_scope(import_session: Session, actor: Actor) -> None:
    data = export(vms=[vm("v-1", "twin", "0a:00:00:00:00:01"), vm("v-2", "twin", None)])
    report = run(import_session, actor, data, scope="/")
    assert [r[2] for r in nic_rows(report)] == ["kept", "conflict"]
    assert "another VM (id v-1) with the same name" in report.vms[1].nics[0].message
    # The NIC without a MAC comes second (new MACs are handed out after kept ones).
    data = export(vms=[vm("v-2", "twin", None), vm("v-1", "twin", "0a:00:00:00:00:01")])
    report = run(import_session, actor, data, scope="/")
    assert [r[2] for r in nic_rows(report)] == ["conflict", "kept"]
    assert "another VM named 'twin' in this import" in report.vms[0].nics[0].message
