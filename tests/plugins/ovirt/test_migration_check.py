"""``POST /api/v1/imports/ovirt/migration-check``: a migration check of an uploaded oVirt
export, per NIC, writing nothing."""

from __future__ import annotations

import io

from flask.testing import FlaskClient

from manager.db import Database
from manager.services import Actor, Owner, allocate_mac
from plugins.ovirt.generate import vm_ovf

CHECK = "/api/v1/imports/ovirt/migration-check"
VM_ID = "7d1c2b9e-4444-4c53-9d8a-0f7d1c2b9e11"


def test_an_uploaded_export_is_checked_per_nic(
    client: FlaskClient, headers: dict[str, dict[str, str]], db: Database
) -> None:
    with db.session(write=True) as s:
        for nic, mac in (("nic1", "0a:00:00:00:10:01"), ("nic2", "0a:00:00:00:10:02")):
            owner = Owner("ovirt-vm", "web", VM_ID) if nic == "nic1" else Owner("device", "r1")
            allocate_mac(s, Actor("t"), scope="/", owner=owner, interface=nic, mac=mac)
    ovf = vm_ovf(vm_id=VM_ID, name="web", macs=[0x0A0000001001, 0x0A0000001002, 0x0A0000001003])
    answer = client.post(
        CHECK,
        data={"file": (io.BytesIO(ovf.encode()), "web.ovf"), "scope": "/kubernetes/apps"},
        headers=headers["viewer"],
    )
    assert answer.status_code == 200, answer.json
    assert [n["status"] for n in answer.json["nics"]] == ["hand-over", "conflict", "free"]
    assert answer.json["passes"] is False
    junk = client.post(
        CHECK,
        data={"file": (io.BytesIO(b"\x00not an export"), "x.bin"), "scope": "/"},
        headers=headers["viewer"],
    )
    assert junk.status_code == 422 and "x.bin" in junk.json["message"]
    no_scope = client.post(
        CHECK, data={"file": (io.BytesIO(ovf.encode()), "web.ovf")}, headers=headers["viewer"]
    )
    assert no_scope.status_code == 422
    assert client.post(CHECK, data={"scope": "/"}).status_code == 401
