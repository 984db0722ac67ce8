"""A migration from oVirt through a real API server, as Forklift / MTV does it.

Import an oVirt VM with ``macpool import ovirt``; create the VirtualMachine Forklift creates for
it (its MAC preserved, labels ``vmID``, ``plan``, ``migration``) through the API server: it is
admitted with that MAC, which moves to it. Delete it before the hand-over is final: the MAC is
back with the oVirt VM, and another VM still cannot take it.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from sqlalchemy import select

from manager.core.mac import format_mac_int
from manager.db import Allocation, Pool
from plugins.kubernetes.admission import REQUESTED_IN_USE
from plugins.ovirt.generate import vm_ovf
from tests.kube.conftest import Cluster
from tests.kube.macpool import MACPOOL, Deployment, MacPoolProcess, running, wait_for
from tests.kube.objects import MASQUERADE, vm, vm_macs

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def macpool(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MacPoolProcess]:
    process = MacPoolProcess(deployment, tmp_path_factory.mktemp("macpool-migration"))
    with running(process):
        yield process


def _holder(macpool: MacPoolProcess, mac: int) -> tuple[str, str, str | None] | None:
    database = macpool.database()
    try:
        with database.session() as session:
            row = session.scalars(select(Allocation).where(Allocation.mac == mac)).first()
            return None if row is None else (row.owner_kind, row.owner_name, row.handover)
    finally:
        database.dispose()


def _import(macpool: MacPoolProcess, tmp: Path, *, vm_id: str, name: str) -> int:
    """``macpool import ovirt`` of one OVF whose NIC has a free MAC of the default pool."""
    database = macpool.database()
    try:
        with database.session() as session:
            pool = session.scalars(select(Pool).where(Pool.is_default)).one()
            start = min(r.start_mac for r in pool.ranges)
    finally:
        database.dispose()
    mac = start + 0x100000 + secrets.randbelow(0xFFFF)
    ovf = tmp / f"{name}.ovf"
    ovf.write_text(vm_ovf(vm_id=vm_id, name=name, macs=[mac]), encoding="utf-8")
    subprocess.run(
        [str(MACPOOL), "import", "ovirt", str(ovf), "--scope", "/", "--apply"],
        env=macpool.env,
        check=True,
        capture_output=True,
    )
    return mac


def test_forklift_vm_takes_its_oVirt_mac_and_gives_it_back_when_deleted(
    cluster: Cluster, macpool: MacPoolProcess, tmp_path: Path
) -> None:
    vm_id = str(uuid.uuid4())
    mac = _import(macpool, tmp_path, vm_id=vm_id, name="legacy-web")
    assert _holder(macpool, mac) == ("ovirt-vm", "legacy-web", None)
    text = format_mac_int(mac)

    copy = vm("legacy-web", cluster.namespace, interfaces=[{**MASQUERADE, "macAddress": text}])
    copy["metadata"]["labels"] = {"vmID": vm_id, "plan": "plan-1", "migration": "mig-1"}
    created = cluster.create_vm(copy)
    assert vm_macs(created) == {"default": text}, "the MAC is kept as Forklift set it"
    wait_for(
        lambda: _holder(macpool, mac) == ("vm", "legacy-web", "pending"),
        what="the MAC handed over to the KubeVirt VM",
    )

    # Nothing else can take it meanwhile: another VM asking for it is refused.
    thief = vm("thief", cluster.namespace, interfaces=[{**MASQUERADE, "macAddress": text}])
    with pytest.raises(ApiException) as refused:
        cluster.create_vm(thief)
    assert REQUESTED_IN_USE in refused.value.body and "legacy-web" in refused.value.body

    cluster.delete_vm("legacy-web")
    wait_for(
        lambda: _holder(macpool, mac) == ("ovirt-vm", "legacy-web", None),
        what="the MAC back with the oVirt VM after the delete",
    )
    with pytest.raises(ApiException):
        cluster.create_vm(
            vm("thief2", cluster.namespace, interfaces=[{**MASQUERADE, "macAddress": text}])
        )
