"""Migrations through the API: check a plan per NIC (writing nothing), list pending hand-overs,
complete them per plan (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from manager.core.actor import Actor, Owner
from manager.db import Database
from manager.services import Handover, allocate_mac, create_pool, create_scope
from tests.api.conftest import Headers

CHECK = "/api/v1/migrations/check"
OVIRT_ID = "6f1c7d8e-1111-4c53-9d8a-0f7d1c2b9e11"
ACTOR = Actor("setup")


def _estate(db: Database) -> None:
    """dc1 (pool ovirt) with VM legacy (2 NICs) and a device; cluster ocp (pool k8s)."""
    with db.session(write=True) as s:
        ovirt = create_pool(s, ACTOR, name="ovirt", ranges=["0a:00:00:00:00:00-0a:00:00:00:00:ff"])
        k8s = create_pool(s, ACTOR, name="k8s", ranges=["0c:00:00:00:00:00-0c:00:00:00:00:ff"])
        create_scope(s, ACTOR, kind="datacenter", name="dc1", pool_id=ovirt.id)
        create_scope(s, ACTOR, kind="cluster", name="ocp", pool_id=k8s.id)
        for nic, mac in (("nic1", "0a:00:00:00:00:01"), ("nic2", "0a:00:00:00:00:02")):
            allocate_mac(
                s,
                ACTOR,
                scope="/dc1",
                owner=Owner("ovirt-vm", "legacy", OVIRT_ID),
                interface=nic,
                mac=mac,
            )
        allocate_mac(
            s,
            ACTOR,
            scope="/dc1",
            owner=Owner("device", "router"),
            interface="eth0",
            mac="0a:00:00:00:00:03",
        )


def _plan(*nics: tuple[str, str], vm_id: str = OVIRT_ID) -> dict[str, Any]:
    return {
        "scope": "/ocp/team-a",
        "vms": [{"id": vm_id, "name": "legacy", "nics": [{"name": n, "mac": m} for n, m in nics]}],
    }


def test_check_answers_per_nic_and_writes_nothing(
    client: FlaskClient,
    viewer: Headers,
    api_db: Database,
    snapshot: Callable[[], dict[str, Any]],
) -> None:
    _estate(api_db)
    before = snapshot()
    plan = _plan(
        ("nic1", "0A-00-00-00-00-01"),  # held by this VM: hand-over
        ("nic2", "0c:00:00:00:00:09"),  # free in the target's pool
        ("nic3", "0a:00:00:00:00:03"),  # the router's: conflict
        ("nic4", "0e:00:00:00:00:01"),  # in no pool: external
    )
    answer = client.post(CHECK, json=plan, headers=viewer)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert (body["passes"], body["pool"], body["scope"]) == (False, "k8s", "/ocp/team-a")
    assert [n["status"] for n in body["nics"]] == ["hand-over", "free", "conflict", "external"]
    assert body["nics"][0]["mac"] == "0a:00:00:00:00:01"
    conflict = body["nics"][2]
    assert "device 'router'" in conflict["message"] and "pool 'ovirt'" in conflict["message"]
    assert conflict["holders"][0]["scope"] == "/dc1"
    assert body["counts"] == {"free": 1, "hand-over": 1, "conflict": 1, "external": 1}
    assert snapshot() == before

    clean = client.post(CHECK, json=_plan(("nic1", "0a:00:00:00:00:01")), headers=viewer)
    assert clean.json["passes"] is True
    other = client.post(
        CHECK, json=_plan(("nic1", "0a:00:00:00:00:01"), vm_id="other"), headers=viewer
    )
    assert [n["status"] for n in other.json["nics"]] == ["conflict"]


def test_check_refuses_bad_input_clearly(client: FlaskClient, viewer: Headers) -> None:
    bad_mac = client.post(CHECK, json=_plan(("nic1", "ff:ff:ff:ff:ff:ff")), headers=viewer)
    assert bad_mac.status_code == 422
    assert "NIC 'nic1'" in bad_mac.json["message"] and "legacy" in bad_mac.json["message"]
    no_scope = client.post(CHECK, json={"vms": []}, headers=viewer)
    assert no_scope.status_code == 422
    assert client.post(CHECK, json=_plan()).status_code == 401


def test_a_plan_of_ten_thousand_nics_is_answered(client: FlaskClient, viewer: Headers) -> None:
    vms = [
        {
            "id": f"id-{v}",
            "name": f"vm{v}",
            "nics": [
                {"name": f"n{i}", "mac": f"0c:00:00:00:{v // 256:02x}:{v % 256 * 0 + i:02x}"}
                for i in range(2)
            ],
        }
        for v in range(5000)
    ]
    # Same MAC asked twice across VMs: every such NIC is a conflict within the plan.
    answer = client.post(CHECK, json={"scope": "/", "vms": vms}, headers=viewer)
    assert answer.status_code == 200
    assert len(answer.json["nics"]) == 10_000
    assert answer.json["passes"] is False


def test_pending_handovers_are_listed_and_completed_per_plan(
    client: FlaskClient, operator: Headers, viewer: Headers, api_db: Database
) -> None:
    _estate(api_db)
    with api_db.session(write=True) as s:
        create_scope(s, ACTOR, kind="namespace", name="team-a", parent="/ocp")
        allocate_mac(
            s,
            ACTOR,
            scope="/ocp/team-a",
            owner=Owner("vm", "legacy"),
            interface="default",
            mac="0a:00:00:00:00:01",
            handover=Handover(OVIRT_ID, plan="p1", migration="m1"),
        )
    assert "macpool_handovers_pending 1.0" in client.get("/metrics").text
    listed = client.get("/api/v1/allocations?handover=pending", headers=viewer)
    assert listed.status_code == 200
    [row] = listed.json
    assert (row["handover"], row["owner"]["kind"], row["scope"]) == ("pending", "vm", "/ocp/team-a")
    assert row["source"]["owner_kind"] == "ovirt-vm" and row["source"]["plan"] == "p1"
    assert row["origin"] == "setup"
    assert client.get("/api/v1/allocations?handover=maybe", headers=viewer).status_code == 422
    assert (
        client.post("/api/v1/migrations/complete", json={"plan": "p1"}, headers=viewer).status_code
        == 403
    )
    done = client.post("/api/v1/migrations/complete", json={"plan": "p1"}, headers=operator)
    assert done.status_code == 200 and [a["handover"] for a in done.json] == ["final"]
    assert client.get("/api/v1/allocations?handover=pending", headers=viewer).json == []
    assert "macpool_handovers_pending 0.0" in client.get("/metrics").text
    both = client.post(
        "/api/v1/migrations/complete", json={"plan": "p1", "allocation_id": 1}, headers=operator
    )
    assert both.status_code == 422
