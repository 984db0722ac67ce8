"""Every oVirt sample (real or constructed) is read with the ids, names, MACs and ranges in it."""

from __future__ import annotations

import pytest

from manager.core import parse_mac
from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.reader import read_paths, read_upload
from plugins.ovirt.records import NoticeKind

from .conftest import sample

DEFAULT_POOL_ID = "58ca604b-017d-0374-0220-00000000014e"


def mac(text: str) -> int:
    return int(parse_mac(text))


def test_engine_42_single_line_ovf_store_entry() -> None:
    export = read_paths([sample("ovf/engine-4.2-ovfstore-hostedengine.ovf")])
    (vm,) = export.vms
    assert vm.id == "eccb9cb6-affd-4806-8200-708370581227"
    assert vm.name == "HostedEngine"
    assert vm.cluster_name == "Default"
    (nic,) = vm.nics
    assert (nic.name, nic.mac, nic.raw_mac) == (
        "vnet0",
        mac("00:16:3e:6a:7a:f9"),
        "00:16:3e:6a:7a:f9",
    )
    assert nic.id == "a959b3de-a059-4634-abcc-eb256be6898d"
    assert (nic.network, nic.vnic_profile, nic.linked, nic.plugged) == (
        "ovirtmgmt",
        "ovirtmgmt",
        True,
        True,
    )
    assert export.warnings == ()


def test_engine_36_two_nics_with_the_same_name() -> None:
    export = read_paths([sample("ovf/engine-hostedengine-two-nics.ovf")])
    (vm,) = export.vms
    assert vm.id == "50e59bbd-f829-4761-ba1b-6db1a6acc3b8"
    assert [(n.name, n.mac_text, n.linked, n.network) for n in vm.nics] == [
        ("nic1", "00:16:3e:43:ed:b5", True, "ovirtmgmt"),
        ("nic1", "00:16:3e:43:ed:b6", False, "dummynet"),
    ]
    (warning,) = export.warnings
    assert warning.kind is NoticeKind.DUPLICATE_NIC_NAME
    assert (warning.vm, warning.nic) == ("HostedEngine", "nic1")


def test_virt_v2v_export_domain_ovf_keeps_its_placeholder_id() -> None:
    export = read_paths([sample("ovf/virt-v2v-o-ovirt-export-domain.ovf")])
    (vm,) = export.vms
    assert (vm.id, vm.name) == ("#VM_ID#", "windows")
    assert [(n.name, n.mac_text, n.network) for n in vm.nics] == [
        ("eth0", "00:11:22:33:44:55", "default")
    ]


@pytest.mark.parametrize(
    ("name", "vm_id", "vm_name", "nic_name"),
    [
        ("ovf/vmware-ova-nic-without-mac.ovf", "TestOva", "TestOva", "Ethernet 1"),
        (
            "ovf/engine-testdata-ova-import-nic-without-mac.ovf",
            "4a6237d9-05a0-4d5a-a7b1-ff01764a761f",
            "sevenofnine",
            "eth0",
        ),
    ],
)
def test_nic_without_mac_gets_none_and_a_warning(
    name: str, vm_id: str, vm_name: str, nic_name: str
) -> None:
    export = read_paths([sample(name)])
    (vm,) = export.vms
    assert (vm.id, vm.name) == (vm_id, vm_name)
    (nic,) = vm.nics
    assert (nic.name, nic.mac, nic.raw_mac) == (nic_name, None, None)
    (warning,) = export.warnings
    assert warning.kind is NoticeKind.MAC_MISSING
    assert (warning.vm, warning.nic) == (vm_name, nic_name)
    assert "new MAC" in warning.message


def test_cluster_references_default_pool() -> None:
    export = read_paths([sample("api/get-clusters-cluster-references-mac_pool.xml")])
    (cluster,) = export.clusters
    assert cluster.id == "5a55d518-00c7-00ef-015b-000000000055"
    assert cluster.name == "Default"
    assert cluster.mac_pool_id == DEFAULT_POOL_ID
    assert export.pools == () and export.vms == ()


def test_separate_nics_list_is_attached_to_its_vm() -> None:
    export = read_paths([sample("api/get-vm-nics-mac-address.xml")])
    (vm,) = export.vms
    assert vm.id == "8070fa6d-5b82-412c-9d41-a00017205c73"
    assert vm.name is None
    (nic,) = vm.nics
    assert (nic.name, nic.mac_text, nic.plugged, nic.linked) == (
        "nic1",
        "00:1a:4a:16:01:04",
        True,
        True,
    )
    assert nic.id == "fee0cbf3-e81f-4b5e-a0d4-1ad3e1210951"
    assert nic.vnic_profile == "4ec7ba24-c6bf-42fc-9975-d6a9bf3f01cf"


def test_single_pool_doc_example_is_lower_cased_with_warnings() -> None:
    export = read_paths([sample("api/get-macpool-api-model-doc-example.xml")])
    (pool,) = export.pools
    assert (pool.id, pool.name, pool.description) == ("123", "Default", "Default MAC pool")
    assert (pool.allow_duplicates, pool.default_pool) == (False, True)
    assert [(r.start, r.end) for r in pool.ranges] == [
        (mac("00:1a:4a:16:01:51"), mac("00:1a:4a:16:01:e6"))
    ]
    assert [w.kind for w in export.warnings] == [NoticeKind.MAC_CASE, NoticeKind.MAC_CASE]
    assert all(w.pool == "Default" for w in export.warnings)


@pytest.mark.parametrize(
    "name", ["api/get-macpools-list-constructed.xml", "api/get-macpools-list-constructed.json"]
)
def test_pool_collection_in_xml_and_json(name: str) -> None:
    export = read_paths([sample(name)])
    default, east = export.pools
    assert (default.id, default.name, default.allow_duplicates, default.default_pool) == (
        DEFAULT_POOL_ID,
        "Default",
        False,
        True,
    )
    assert [str(r) for r in default.ranges] == ["56:6f:3c:9e:00:00-56:6f:3c:9e:ff:ff"]
    assert (east.id, east.name, east.description) == (
        "a1b2c3d4-0000-4000-8000-00000000beef",
        "cluster-east",
        "East site clusters",
    )
    assert (east.allow_duplicates, east.default_pool) == (True, False)
    assert [str(r) for r in east.ranges] == [
        "02:00:00:00:00:00-02:00:00:00:ff:ff",
        "02:00:00:10:00:00-02:00:00:10:0f:ff",
    ]
    assert export.warnings == ()


def test_create_and_update_requests_without_id() -> None:
    created = read_paths([sample("api/post-macpools-request.xml")])
    (pool,) = created.pools
    assert (pool.id, pool.name, pool.allow_duplicates) == ("MACPool", "MACPool", True)
    updated = read_paths([sample("api/put-macpool-request.xml")])
    (pool,) = updated.pools
    assert [str(r) for r in pool.ranges] == [
        "00:1a:4a:16:01:51-00:1a:4a:16:01:e6",
        "02:1a:4a:01:00:00-02:1a:4a:ff:ff:ff",
    ]
    assert sum(w.kind is NoticeKind.MAC_CASE for w in updated.warnings) == 4


def test_fault_body_is_refused_with_the_engine_detail() -> None:
    path = sample("api/fault-409-overlapping-pools-constructed.xml")
    with pytest.raises(OvirtExportError, match=r"error response.*overlap with ranges") as info:
        read_paths([path])
    assert str(path) in str(info.value)


def test_all_samples_together_merge() -> None:
    paths = sorted(
        p
        for p in (sample("ovf").parent).glob("*/*")
        if p.suffix in (".ovf", ".json") or (p.suffix == ".xml" and "fault" not in p.name)
    )
    export = read_paths(paths)
    assert len(export.vms) == 6
    assert {p.id for p in export.pools} >= {DEFAULT_POOL_ID, "123", "MACPool"}
    assert export.nic_count == 7


def test_upload_of_a_single_sample() -> None:
    data = sample("ovf/engine-4.2-ovfstore-hostedengine.ovf").read_bytes()
    export = read_upload("eccb9cb6-affd-4806-8200-708370581227.ovf", data)
    assert export.vms[0].nics[0].mac_text == "00:16:3e:6a:7a:f9"
    assert export.vms[0].source == "eccb9cb6-affd-4806-8200-708370581227.ovf"
