"""The synthetic export-domain generator writes what the readers read back exactly."""

from __future__ import annotations

from pathlib import Path

from plugins.ovirt.generate import generated_id, write_export_domain
from plugins.ovirt.reader import read_paths


def test_generated_domain_round_trips(tmp_path: Path) -> None:
    start = 0x02_AA_00_00_00_00
    domain = write_export_domain(tmp_path, vms=25, nics_per_vm=3, mac_start=start)
    assert domain.name == generated_id("storage-domain", 0)
    assert len(list((domain / "master" / "vms").iterdir())) == 25
    export = read_paths([domain])
    assert export.nic_count == 75 and export.warnings == ()
    by_name = {vm.name: vm for vm in export.vms}
    vm7 = by_name["vm-7"]
    assert vm7.id == generated_id("vm", 7)
    assert [(n.name, n.mac) for n in vm7.nics] == [
        ("nic1", start + 21),
        ("nic2", start + 22),
        ("nic3", start + 23),
    ]


def test_generation_is_reproducible(tmp_path: Path) -> None:
    one = write_export_domain(tmp_path / "a", vms=2, nics_per_vm=1)
    two = write_export_domain(tmp_path / "b", vms=2, nics_per_vm=1)
    files_one = sorted(p.relative_to(one) for p in one.rglob("*.ovf"))
    assert files_one == sorted(p.relative_to(two) for p in two.rglob("*.ovf"))
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files_one)
