"""Normalization of what the engine tolerated: each change is a warning, garbage is an error."""

from __future__ import annotations

import json

import pytest

from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.macs import parse_lenient_mac
from plugins.ovirt.reader import read_upload
from plugins.ovirt.records import NoticeKind, OvirtExport


def pool_json(*ranges: tuple[str, str], allow: object = "false", name: str = "legacy") -> bytes:
    return json.dumps(
        {
            "mac_pool": [
                {
                    "id": "p1",
                    "name": name,
                    "allow_duplicates": allow,
                    "default_pool": "false",
                    "ranges": {"range": [{"from": a, "to": b} for a, b in ranges]},
                }
            ]
        }
    ).encode()


def ranges_of(export: OvirtExport) -> list[str]:
    (pool,) = export.pools
    return [str(r) for r in pool.ranges]


def kinds(export: OvirtExport) -> list[NoticeKind]:
    return [w.kind for w in export.warnings]


@pytest.mark.parametrize(
    ("raw", "value", "upper", "unpadded"),
    [
        ("00:1a:4a:16:01:51", 0x001A4A160151, False, False),
        ("00:1A:4A:16:01:E6", 0x001A4A1601E6, True, False),
        ("00:1a:4a:1:f:00", 0x001A4A010F00, False, True),
        ("0-1a-4a-1-F-0", 0x001A4A010F00, True, True),
        ("001a.4a16.0151", 0x001A4A160151, False, False),
        (" 001a4a160151 ", 0x001A4A160151, False, False),
    ],
)
def test_lenient_parser_accepts_legacy_forms(
    raw: str, value: int, upper: bool, unpadded: bool
) -> None:
    parsed = parse_lenient_mac(raw)
    assert parsed is not None
    assert (parsed.value, parsed.upper_case, parsed.unpadded) == (value, upper, unpadded)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "zz:1a:4a:16:01:51",
        "00:1a:4a:16:01",
        "00:1a:4a:16:01:51:00",
        "00:1a-4a:16:01:51",
        "001:1a:4a:16:01:5",
        "0x001a4a160151",
        "1" * 10_000,
    ],
)
def test_lenient_parser_rejects_garbage(raw: str) -> None:
    assert parse_lenient_mac(raw) is None


def test_upper_case_and_unpadded_bounds() -> None:
    export = read_upload("pools.json", pool_json(("00:1A:4A:1:F:00", "00:1a:4a:1:f:ff")))
    assert ranges_of(export) == ["00:1a:4a:01:0f:00-00:1a:4a:01:0f:ff"]
    assert sorted(kinds(export)) == sorted(
        [NoticeKind.MAC_PADDING, NoticeKind.MAC_CASE, NoticeKind.MAC_PADDING]
    )
    padding = next(w for w in export.warnings if w.kind is NoticeKind.MAC_PADDING)
    # The engine's own reading of such a value is reported alongside (BZ 1286132).
    assert "00:00:1a:4a:1f:00" in padding.message
    assert padding.pool == "legacy"


def test_reversed_bounds_are_swapped() -> None:
    export = read_upload("p.json", pool_json(("02:00:00:00:00:ff", "02:00:00:00:00:00")))
    assert ranges_of(export) == ["02:00:00:00:00:00-02:00:00:00:00:ff"]
    assert kinds(export) == [NoticeKind.RANGE_REVERSED]


def test_multicast_bounds_are_clipped_like_the_engine() -> None:
    # reference/ovirt.md §2.12 case 7: the multicast start moves to the next first octet.
    export = read_upload("p.json", pool_json(("01:00:00:00:00:00", "02:00:00:00:00:ff")))
    assert ranges_of(export) == ["02:00:00:00:00:00-02:00:00:00:00:ff"]
    assert kinds(export) == [NoticeKind.RANGE_MULTICAST]
    export = read_upload("p.json", pool_json(("02:00:00:00:00:00", "03:00:00:00:00:10")))
    assert ranges_of(export) == ["02:00:00:00:00:00-02:ff:ff:ff:ff:ff"]


def test_all_multicast_range_is_dropped_and_pool_reported_empty() -> None:
    export = read_upload("p.json", pool_json(("01:00:00:00:00:00", "01:00:00:00:00:ff")))
    assert ranges_of(export) == []
    assert kinds(export) == [NoticeKind.RANGE_DROPPED, NoticeKind.POOL_WITHOUT_RANGES]


def test_zero_start_moves_to_first_address() -> None:
    export = read_upload("p.json", pool_json(("00:00:00:00:00:00", "00:00:00:00:00:0f")))
    assert ranges_of(export) == ["00:00:00:00:00:01-00:00:00:00:00:0f"]
    assert kinds(export) == [NoticeKind.RANGE_ZERO]


def test_overlapping_ranges_merge_but_adjacent_ones_do_not() -> None:
    export = read_upload(
        "p.json",
        pool_json(
            ("02:00:00:00:00:10", "02:00:00:00:00:20"),
            ("02:00:00:00:00:00", "02:00:00:00:00:10"),
            ("02:00:00:00:00:21", "02:00:00:00:00:30"),
            ("02:00:00:00:00:05", "02:00:00:00:00:06"),
        ),
    )
    assert ranges_of(export) == [
        "02:00:00:00:00:00-02:00:00:00:00:20",
        "02:00:00:00:00:21-02:00:00:00:00:30",
    ]
    (merged,) = export.warnings
    assert merged.kind is NoticeKind.RANGES_MERGED
    assert "02:00:00:00:00:05-02:00:00:00:00:06" in merged.message


def test_identical_ranges_merge() -> None:
    pair = ("02:00:00:00:00:00", "02:00:00:00:00:ff")
    export = read_upload("p.json", pool_json(pair, pair))
    assert ranges_of(export) == ["02:00:00:00:00:00-02:00:00:00:00:ff"]
    assert kinds(export) == [NoticeKind.RANGES_MERGED]


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("FALSE", False), (True, True)])
def test_json_booleans_as_strings_or_booleans(text: object, expected: bool) -> None:
    export = read_upload(
        "p.json", pool_json(("02:00:00:00:00:00", "02:00:00:00:00:01"), allow=text)
    )
    assert export.pools[0].allow_duplicates is expected


def test_bad_boolean_is_an_error_naming_file_and_pool() -> None:
    with pytest.raises(OvirtExportError, match=r"p\.json: MAC pool 'legacy': 'allow_duplicates'"):
        read_upload("p.json", pool_json(("02:00:00:00:00:00", "02:00:00:00:00:01"), allow="yes"))


def test_garbage_range_bound_is_an_error_naming_the_pool() -> None:
    with pytest.raises(OvirtExportError, match=r"p\.json: MAC pool 'legacy'.*'nonsense'"):
        read_upload("p.json", pool_json(("nonsense", "02:00:00:00:00:01")))


def vm_json(*macs: object) -> bytes:
    nics = []
    for index, value in enumerate(macs, start=1):
        nic: dict[str, object] = {"name": f"nic{index}", "plugged": "false"}
        if value is not None:
            nic["mac"] = {"address": value}
        nics.append(nic)
    return json.dumps(
        {"vm": [{"id": "vm-1", "name": "web", "cluster": {"id": "c1"}, "nics": {"nic": nics}}]}
    ).encode()


def test_nic_mac_normalization_and_missing_macs() -> None:
    export = read_upload("vms.json", vm_json("00:1A:4A:16:1:4", "", None, "01:00:5e:00:00:01"))
    (vm,) = export.vms
    assert vm.cluster_id == "c1"
    assert [(n.name, n.mac_text, n.raw_mac, n.plugged) for n in vm.nics] == [
        ("nic1", "00:1a:4a:16:01:04", "00:1A:4A:16:1:4", False),
        ("nic2", None, "", False),
        ("nic3", None, None, False),
        ("nic4", None, "01:00:5e:00:00:01", False),
    ]
    assert [(w.kind, w.nic) for w in export.warnings] == [
        (NoticeKind.MAC_PADDING, "nic1"),
        (NoticeKind.MAC_CASE, "nic1"),
        (NoticeKind.MAC_MISSING, "nic2"),
        (NoticeKind.MAC_MISSING, "nic3"),
        (NoticeKind.MAC_NOT_ASSIGNABLE, "nic4"),
    ]
    assert all(w.vm == "web" for w in export.warnings)


def test_garbage_nic_mac_is_an_error_naming_file_vm_and_nic() -> None:
    with pytest.raises(OvirtExportError) as info:
        read_upload("vms.json", vm_json("00:16:3e:00:00:01", "not-a-mac"))
    assert str(info.value).startswith("vms.json, VM 'web', NIC 'nic2': 'not-a-mac'")
    assert info.value.details["nic"] == "nic2"


def test_garbage_mac_in_ovf_names_the_file_vm_and_nic() -> None:
    ovf = (
        b'<Envelope xmlns:rasd="r"><Content><Name>db</Name><Section xsi:type="ovf:'
        b'VirtualHardwareSection_Type" xmlns:xsi="x"><Item><rasd:ResourceType>10'
        b"</rasd:ResourceType><rasd:Name>eth7</rasd:Name><rasd:MACAddress>00:zz</rasd:MACAddress>"
        b"</Item></Section></Content></Envelope>"
    )
    with pytest.raises(OvirtExportError, match=r"^db\.ovf, VM 'db', NIC 'eth7': '00:zz'"):
        read_upload("db.ovf", ovf)


def test_xml_and_json_exports_of_the_whole_estate() -> None:
    xml = b"""<export>
      <data_centers><data_center id="dc1"><name>east</name><mac_pool id="p1"/></data_center>
      </data_centers>
      <clusters><cluster id="c1"><name>c-east</name><data_center id="dc1"/><mac_pool id="p1"/>
      </cluster></clusters>
      <vms><vm id="v1"><name>web</name><cluster id="c1"/><nics><nic id="n1"><name>nic1</name>
        <mac><address>02:00:00:00:00:05</address></mac><plugged>false</plugged></nic></nics></vm>
      </vms>
    </export>"""
    export = read_upload("estate.xml", xml)
    (dc,) = export.data_centers
    assert (dc.id, dc.name, dc.mac_pool_id) == ("dc1", "east", "p1")
    (cluster,) = export.clusters
    assert (cluster.id, cluster.name, cluster.data_center_id, cluster.mac_pool_id) == (
        "c1",
        "c-east",
        "dc1",
        "p1",
    )
    (vm,) = export.vms
    assert (vm.id, vm.name, vm.cluster_id) == ("v1", "web", "c1")
    assert [(n.id, n.mac_text, n.plugged) for n in vm.nics] == [("n1", "02:00:00:00:00:05", False)]


def test_json_list_of_objects_classified_by_href() -> None:
    data = json.dumps(
        [
            {
                "id": "c9",
                "href": "/ovirt-engine/api/clusters/c9",
                "name": "c",
                "mac_pool": {"id": "p1", "href": "/ovirt-engine/api/macpools/p1"},
            },
            {"id": "d9", "href": "/ovirt-engine/api/datacenters/d9", "name": "d"},
        ]
    ).encode()
    export = read_upload("mixed.json", data)
    assert [(c.id, c.mac_pool_id) for c in export.clusters] == [("c9", "p1")]
    assert [d.id for d in export.data_centers] == ["d9"]


def test_unrecognized_documents_are_refused() -> None:
    with pytest.raises(OvirtExportError, match="not an oVirt API export"):
        read_upload("x.xml", b"<html><body/></html>")
    with pytest.raises(OvirtExportError, match="neither XML, JSON"):
        read_upload("x.txt", b"hello")
    with pytest.raises(OvirtExportError, match="not valid JSON"):
        read_upload("x.json", b"{nope")
