"""Export storage domains, OVF_STORE tars, OVAs, uploads, progress and merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.generate import DEFAULT_MAC_START, generated_id, vm_ovf, write_export_domain
from plugins.ovirt.reader import read_paths, read_upload
from plugins.ovirt.records import NoticeKind, OvirtExport, OvirtNic, OvirtVm

from .conftest import sample, tar_bytes, zip_bytes

VM_A = "11111111-1111-4111-8111-111111111111"
VM_B = "22222222-2222-4222-8222-222222222222"


def macs_by_vm(export: OvirtExport) -> dict[str, list[str | None]]:
    return {vm.id: [n.mac_text for n in vm.nics] for vm in export.vms}


def test_export_domain_tree_reads_vms_and_skips_templates(tmp_path: Path) -> None:
    domain = write_export_domain(tmp_path, vms=3, nics_per_vm=2)
    template = domain / "master" / "templates" / VM_A / f"{VM_A}.ovf"
    template.parent.mkdir(parents=True)
    template.write_text(vm_ovf(vm_id=VM_A, name="tpl", macs=[]))
    (domain / "dom_md").mkdir()
    (domain / "dom_md" / "metadata").write_text("CLASS=Backup\n")
    export = read_paths([domain])
    assert sorted(vm.name or "" for vm in export.vms) == [f"vm-{i}" for i in range(3)]
    assert {vm.id for vm in export.vms} == {generated_id("vm", i) for i in range(3)}
    all_macs = sorted(n.mac for vm in export.vms for n in vm.nics if n.mac is not None)
    assert all_macs == list(range(DEFAULT_MAC_START, DEFAULT_MAC_START + 6))
    assert all(vm.cluster_name == "Default" for vm in export.vms)
    assert export.warnings == ()
    # The mount point above the domain is recognized too.
    assert macs_by_vm(read_paths([tmp_path])) == macs_by_vm(export)


def test_progress_reports_every_document(tmp_path: Path) -> None:
    domain = write_export_domain(tmp_path, vms=4, nics_per_vm=1)
    calls: list[tuple[int, int]] = []
    read_paths([domain], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_vm_id_from_file_name_when_the_ovf_has_none(tmp_path: Path) -> None:
    folder = tmp_path / "master" / "vms" / VM_B
    folder.mkdir(parents=True)
    text = sample("ovf/vmware-ova-nic-without-mac.ovf").read_text()
    (folder / f"{VM_B}.ovf").write_text(text.replace('ovf:id="TestOva"', ""))
    (vm,) = read_paths([tmp_path]).vms
    assert vm.id == VM_B


def test_vm_id_mismatch_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "master" / "vms" / VM_B
    folder.mkdir(parents=True)
    (folder / f"{VM_B}.ovf").write_text(vm_ovf(vm_id=VM_A, name="x", macs=[0x020000000001]))
    export = read_paths([tmp_path])
    assert export.vms[0].id == VM_A
    assert [w.kind for w in export.warnings] == [NoticeKind.VM_ID_MISMATCH]


def ovf_store(tmp_path: Path) -> Path:
    members = {
        f"{VM_A}.ovf": vm_ovf(vm_id=VM_A, name="a", macs=[0x021A4A000001]).encode(),
        f"{VM_B}.ovf": sample("ovf/engine-4.2-ovfstore-hostedengine.ovf").read_bytes(),
        "metadata.json": json.dumps({"VM Count": 2, "Last Updated": "x"}).encode(),
    }
    path = tmp_path / "ovf_store.tar"
    path.write_bytes(tar_bytes(members))
    return path


def test_ovf_store_tar(tmp_path: Path) -> None:
    export = read_paths([ovf_store(tmp_path)])
    assert macs_by_vm(export) == {
        VM_A: ["02:1a:4a:00:00:01"],
        "eccb9cb6-affd-4806-8200-708370581227": ["00:16:3e:6a:7a:f9"],
    }
    # The engine's id wins over the member name, and the difference is reported.
    assert [w.kind for w in export.warnings] == [NoticeKind.VM_ID_MISMATCH]
    assert export.vms[0].source.endswith(f"ovf_store.tar!{VM_A}.ovf")


def test_ova_with_disk_image(tmp_path: Path) -> None:
    ovf = sample("ovf/engine-testdata-ova-import-nic-without-mac.ovf").read_bytes()
    path = tmp_path / "vm.ova"
    path.write_bytes(tar_bytes({"vm.ovf": ovf, "disk1.img": b"\0" * 100_000}))
    export = read_paths([path])
    (vm,) = export.vms
    assert (vm.id, vm.name, vm.nics[0].mac) == (
        "4a6237d9-05a0-4d5a-a7b1-ff01764a761f",
        "sevenofnine",
        None,
    )
    assert [w.kind for w in export.warnings] == [NoticeKind.MAC_MISSING]


def domain_members(tmp_path: Path) -> dict[str, bytes]:
    domain = write_export_domain(tmp_path, vms=2, nics_per_vm=2)
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in domain.rglob("*.ovf")}


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_upload_of_an_export_domain_archive(tmp_path: Path, kind: str) -> None:
    members = domain_members(tmp_path)
    data = (
        zip_bytes(members)
        if kind == "zip"
        else tar_bytes(members, mode="w:gz" if kind == "tar.gz" else "w")
    )
    export = read_upload(f"domain.{kind}", data)
    assert sorted(vm.name or "" for vm in export.vms) == ["vm-0", "vm-1"]
    assert export.nic_count == 4


def test_upload_of_api_bundle_zip() -> None:
    members = {
        "macpools.json": sample("api/get-macpools-list-constructed.json").read_bytes(),
        "clusters.xml": sample("api/get-clusters-cluster-references-mac_pool.xml").read_bytes(),
    }
    export = read_upload("estate.zip", zip_bytes(members))
    assert len(export.pools) == 2 and len(export.clusters) == 1


def test_directory_of_mixed_exports(tmp_path: Path) -> None:
    (tmp_path / "pools.xml").write_bytes(
        sample("api/get-macpools-list-constructed.xml").read_bytes()
    )
    (tmp_path / "notes.txt").write_text("ignored")
    ovf_store(tmp_path)
    export = read_paths([tmp_path])
    assert len(export.pools) == 2 and len(export.vms) == 2


def test_merge_combines_vms_and_reports_conflicting_copies() -> None:
    nic = OvirtNic(name="nic1", mac=1 << 41, raw_mac="02:00:00:00:00:00")
    other = OvirtNic(name="nic2", mac=None, raw_mac=None)
    first = OvirtExport(vms=(OvirtVm(id="v", name=None, nics=(nic,), source="a"),))
    second = OvirtExport(
        vms=(OvirtVm(id="v", name="web", nics=(nic, other), source="b", cluster_id="c"),)
    )
    merged = first.merge(second)
    (vm,) = merged.vms
    assert (vm.name, vm.cluster_id, vm.source) == ("web", "c", "a")
    assert [n.name for n in vm.nics] == ["nic1", "nic2"]
    pools_a = read_upload("a.json", sample("api/get-macpools-list-constructed.json").read_bytes())
    pools_b = read_upload("b.xml", sample("api/get-macpools-list-constructed.xml").read_bytes())
    assert pools_a.merge(pools_b).warnings == ()  # same content: no notice
    doc = sample("api/get-macpool-api-model-doc-example.xml").read_bytes()
    changed = read_upload("c.xml", doc.replace(b"Default MAC pool", b"changed"))
    merged = read_upload("d.xml", doc).merge(changed)
    assert len(merged.pools) == 1 and merged.pools[0].description == "Default MAC pool"
    assert NoticeKind.DUPLICATE_RECORD in [w.kind for w in merged.warnings]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(OvirtExportError, match="no such file"):
        read_paths([tmp_path / "nope"])
    with pytest.raises(OvirtExportError, match="holds no oVirt export"):
        read_paths([tmp_path])


def test_template_in_ovf_store_is_skipped(tmp_path: Path) -> None:
    template = vm_ovf(vm_id=VM_B, name="tpl", macs=[]).replace(
        "ovf:VirtualSystem_Type", "ovf:VirtualSystemTemplate_Type"
    )
    path = tmp_path / "store.tar"
    path.write_bytes(tar_bytes({f"{VM_B}.ovf": template.encode()}))
    export = read_paths([path])
    assert export.vms == ()
    assert [w.kind for w in export.warnings] == [NoticeKind.SKIPPED]
