"""Migration pages: a MAC's hand-over and history, completing it, giving it back, the check."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient

from manager.core.actor import Actor, Owner
from manager.services import Handover, allocate_mac, create_scope, find_allocations
from tests.ui.conftest import app_session, post

MAC = "02:00:00:00:77:01"
VM_ID = "5e0c1b2a-3333-4c53-9d8a-0f7d1c2b9e11"


def _handed_over(app: Flask) -> int:
    """legacy-web imported from oVirt, then taken over by its KubeVirt copy (plan p7)."""
    with app_session(app) as s:
        create_scope(s, Actor("t"), kind="datacenter", name="dc1")
        cluster = create_scope(s, Actor("t"), kind="cluster", name="ocp")
        create_scope(s, Actor("t"), kind="namespace", name="apps", parent=cluster.id)
        allocate_mac(
            s,
            Actor("ovirt-import"),
            scope="/dc1",
            owner=Owner("ovirt-vm", "legacy-web", VM_ID),
            interface="nic1",
            mac=MAC,
        )
        taken = allocate_mac(
            s,
            Actor("kubernetes-webhook"),
            scope="/ocp/apps",
            owner=Owner("vm", "legacy-web"),
            interface="default",
            mac=MAC,
            handover=Handover(VM_ID, plan="p7"),
        )
        return taken.allocation.id


def test_mac_page_shows_the_pending_hand_over_and_its_history(
    app: Flask, viewer: FlaskClient
) -> None:
    _handed_over(app)
    page = viewer.get(f"/macs/{MAC}").get_data(as_text=True)
    assert "Migration hand-over pending" in page and "plan p7" in page
    assert "hand-over pending" in page
    assert "Allocated to ovirt-vm &#39;legacy-web&#39;" in page
    assert "Handed over from ovirt-vm &#39;legacy-web&#39; (/dc1) to vm" in page
    assert "Complete the hand-over" not in page, "viewers cannot complete it"


def test_an_operator_completes_the_hand_over(app: Flask, operator: FlaskClient) -> None:
    allocation_id = _handed_over(app)
    answer = post(
        operator, f"/allocations/{allocation_id}/complete-handover", follow_redirects=True
    )
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "is final" in page
    assert "Hand-over final (completed)" in page
    with app_session(app, write=False) as s:
        assert find_allocations(s, handover="final").total == 1
    no_token = operator.post(f"/allocations/{allocation_id}/complete-handover")
    assert no_token.status_code == 400


def test_releasing_a_pending_hand_over_says_where_the_mac_went(
    app: Flask, operator: FlaskClient
) -> None:
    allocation_id = _handed_over(app)
    answer = post(operator, f"/allocations/{allocation_id}/release", follow_redirects=True)
    page = answer.get_data(as_text=True)
    assert "went back to ovirt-vm &#39;legacy-web&#39;" in page
    assert "Given back to ovirt-vm &#39;legacy-web&#39;" in page


def test_the_check_page_answers_per_nic_and_refuses_bad_input(
    app: Flask, viewer: FlaskClient
) -> None:
    _handed_over(app)
    assert "Check a migration" in viewer.get("/migrations/check").get_data(as_text=True)
    plan = {
        "vms": [
            {"id": "other-vm", "name": "web2", "nics": [{"name": "nic1", "mac": MAC}]},
            {"id": "x", "name": "db", "nics": [{"name": "nic1", "mac": "02:00:00:00:77:09"}]},
        ]
    }
    answer = post(viewer, "/migrations/check", {"scope": "/ocp/new-ns", "plan": json.dumps(plan)})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "The plan fails: a NIC is in conflict" in page
    assert "conflict" in page and "free" in page and "vm &#39;legacy-web&#39;" in page
    bad = post(viewer, "/migrations/check", {"scope": "/ocp/new-ns", "plan": "{oops"})
    assert bad.status_code == 422 and "The plan is not JSON" in bad.get_data(as_text=True)
    bad_mac = {"vms": [{"id": "x", "name": "db", "nics": [{"name": "n", "mac": "zz"}]}]}
    refused = post(viewer, "/migrations/check", {"scope": "/", "plan": json.dumps(bad_mac)})
    assert refused.status_code == 422 and "NIC &#39;n&#39;" in refused.get_data(as_text=True)


def test_the_check_page_reads_an_uploaded_ovirt_export(app: Flask, viewer: FlaskClient) -> None:
    import io

    from plugins.ovirt.generate import vm_ovf

    _handed_over(app)
    ovf = vm_ovf(vm_id="other-vm", name="web9", macs=[int(MAC.replace(":", ""), 16)])
    answer = post(
        viewer,
        "/migrations/check",
        {"scope": "/ocp/apps", "plan": "", "file": (io.BytesIO(ovf.encode()), "web9.ovf")},
        content_type="multipart/form-data",
    )
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200, page
    assert "web9" in page and "The plan fails" in page
