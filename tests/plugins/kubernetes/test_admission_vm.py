"""VirtualMachine admission: AdmissionReview in, JSON patch out, checked by applying it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from manager.core import parse_mac
from plugins.kubernetes.admission import review_virtual_machine
from plugins.kubernetes.patches import TRANSACTION_ANNOTATION
from tests.plugins.kubernetes.conftest import VERSIONS, VM_GVK, Outcome, review_body, run_review
from tests.plugins.kubernetes.fakes import FakeBroker

STAMP = "2026-08-04T11:29:00.123456789Z"
LATER = "2026-08-04T11:30:00.000000001Z"


def vm(
    interfaces: list[dict[str, Any]],
    networks: list[dict[str, Any]],
    *,
    name: str = "testvm",
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A VirtualMachine as kubectl would send it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": interfaces,
                            "disks": [{"name": "disk0", "disk": {"bus": "virtio"}}],
                        },
                        "resources": {"requests": {"memory": "64Mi"}},
                    },
                    "networks": networks,
                    "volumes": [{"name": "disk0", "containerDisk": {"image": "cirros"}}],
                },
            },
        },
    }


POD_NET = {"name": "default", "pod": {}}
MULTUS_NET = {"name": "br1", "multus": {"networkName": "br1"}}


def ifaces(vm_obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert vm_obj is not None
    result: list[dict[str, Any]] = vm_obj["spec"]["template"]["spec"]["domain"]["devices"][
        "interfaces"
    ]
    return result


def review(
    broker: FakeBroker, obj: dict[str, Any] | None, *, stamp: str = STAMP, **kwargs: Any
) -> Outcome:
    body = review_body(obj, gvk=VM_GVK, **kwargs)
    return run_review(review_virtual_machine, body, broker, clock=lambda: stamp)


def assert_only_macs_and_stamp_changed(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Nothing but interface MACs and the transaction annotation may differ."""
    scrubbed = copy.deepcopy(after)
    for iface, original in zip(ifaces(scrubbed), ifaces(before), strict=True):
        if "macAddress" not in original:
            iface.pop("macAddress", None)
    annotations = scrubbed["metadata"].get("annotations", {})
    annotations.pop(TRANSACTION_ANNOTATION, None)
    if not annotations and "annotations" not in before["metadata"]:
        scrubbed["metadata"].pop("annotations", None)
    elif TRANSACTION_ANNOTATION in before["metadata"].get("annotations", {}):
        annotations[TRANSACTION_ANNOTATION] = before["metadata"]["annotations"][
            TRANSACTION_ANNOTATION
        ]
    assert scrubbed == before


# --- CREATE: which interfaces get a MAC ---------------------------------------------------------

CREATE_CASES = [
    pytest.param([{"name": "default", "masquerade": {}}], [POD_NET], [0], id="masquerade-on-pod"),
    pytest.param([{"name": "default", "bridge": {}}], [POD_NET], [], id="bridge-on-pod"),
    pytest.param([{"name": "default", "slirp": {}}], [POD_NET], [], id="slirp-on-pod"),
    pytest.param(
        [{"name": "default", "binding": {"name": "passt"}}], [POD_NET], [], id="binding-on-pod"
    ),
    pytest.param(
        [{"name": "default", "masquerade": {}}, {"name": "br1", "bridge": {}}],
        [POD_NET, MULTUS_NET],
        [0, 1],
        id="masquerade-and-multus-bridge",
    ),
    pytest.param([{"name": "br1", "sriov": {}}], [MULTUS_NET], [0], id="sriov-on-multus"),
    pytest.param([{"name": "orphan", "bridge": {}}], [POD_NET], [], id="bridge-without-network"),
    pytest.param(
        [{"name": "orphan", "masquerade": {}}], [POD_NET], [0], id="masquerade-without-network"
    ),
    pytest.param([], [POD_NET], [], id="no-interfaces"),
    pytest.param([{"name": "default", "masquerade": {}}], [], [], id="no-networks"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("interfaces", "networks", "expected"), CREATE_CASES)
def test_create_gives_macs_to_masquerade_and_multus_interfaces(
    broker: FakeBroker,
    version: str,
    interfaces: list[dict[str, Any]],
    networks: list[dict[str, Any]],
    expected: list[int],
) -> None:
    obj = vm(interfaces, networks)
    out = review(broker, obj, version=version)
    assert out.result.allowed and out.response["response"]["allowed"] is True
    assert out.patched is not None
    # The stamp is always set on CREATE, even with no MAC (KubeMacPool does the same).
    assert out.patched["metadata"]["annotations"] == {TRANSACTION_ANNOTATION: STAMP}
    got = [i for i, iface in enumerate(ifaces(out.patched)) if "macAddress" in iface]
    assert got == expected
    macs = [ifaces(out.patched)[i]["macAddress"] for i in expected]
    assert len(set(macs)) == len(macs)
    assert sorted(macs) == broker.macs()
    for mac in macs:
        assert broker.start <= int(parse_mac(mac)) <= broker.end
    assert all(op["op"] == "add" for op in out.patch)
    assert_only_macs_and_stamp_changed(obj, out.patched)


def test_create_keeps_existing_annotations(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET], annotations={"a/b": "c"})
    out = review(broker, obj)
    assert out.patch[0] == {
        "op": "add",
        "path": "/metadata/annotations/kubemacpool.io~1transaction-timestamp",
        "value": STAMP,
    }
    assert out.patch[1]["path"] == "/spec/template/spec/domain/devices/interfaces/0/macAddress"
    assert out.patched is not None
    assert out.patched["metadata"]["annotations"] == {"a/b": "c", TRANSACTION_ANNOTATION: STAMP}


def test_create_adds_annotations_map_when_missing(broker: FakeBroker) -> None:
    out = review(broker, vm([{"name": "default", "masquerade": {}}], [POD_NET]))
    assert out.patch[0] == {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {TRANSACTION_ANNOTATION: STAMP},
    }


def test_many_vms_get_unique_macs_until_the_pool_is_exhausted(broker: FakeBroker) -> None:
    seen: set[str] = set()
    two = [{"name": "default", "masquerade": {}}, {"name": "br1", "bridge": {}}]
    for n in range(8):  # 16 MACs in the fake pool, two per VM
        out = review(broker, vm(two, [POD_NET, MULTUS_NET], name=f"vm{n}"))
        assert out.result.allowed
        seen.update(i["macAddress"] for i in ifaces(out.patched))
    assert len(seen) == 16
    before = broker.macs()
    out = review(broker, vm(two, [POD_NET, MULTUS_NET], name="vm-full"))
    assert not out.result.allowed
    status = out.response["response"]["status"]
    assert status["code"] == 409
    assert status["message"].startswith(
        "Failed to create virtual machine allocation error: "
        "Failed to allocate mac to the vm object: the range is full"
    )
    assert "pool 'default'" in status["message"]
    assert "patch" not in out.response["response"]
    assert broker.macs() == before


def test_create_retry_is_idempotent(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    first = review(broker, obj)
    second = review(broker, obj)
    assert ifaces(first.patched) == ifaces(second.patched)
    assert len(broker.macs()) == 1


# --- requested MACs -----------------------------------------------------------------------------


def test_requested_mac_is_kept_and_registered(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "masquerade": {}, "macAddress": "06-00-00-00-00-01"}], [POD_NET])
    out = review(broker, obj)
    assert out.result.allowed
    assert ifaces(out.patched)[0]["macAddress"] == "06-00-00-00-00-01"  # user's notation kept
    assert [op["path"] for op in out.patch] == ["/metadata/annotations"]
    assert broker.macs() == ["06:00:00:00:00:01"]  # out of range is accepted


def test_requested_mac_on_unsupported_interface_is_registered(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "bridge": {}, "macAddress": "02:aa:00:00:00:01"}], [POD_NET])
    assert review(broker, obj).result.allowed
    assert broker.macs() == ["02:aa:00:00:00:01"]


@pytest.mark.parametrize(
    ("mac", "fragment"),
    [
        ("invalid-mac", "invalid-mac"),
        ("01:00:00:00:00:02", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "multicast"),
        ("00:00:00:00:00:00", "all-zero"),
        ("02:00:00:00:00:01:ff:ee", "02:00:00:00:00:01:ff:ee"),
        (7, "7"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_invalid_requested_mac_is_refused(
    broker: FakeBroker, mac: object, fragment: str, dry_run: bool
) -> None:
    obj = vm([{"name": "iface1", "masquerade": {}, "macAddress": mac}], [POD_NET])
    out = review(broker, obj, dry_run=dry_run)
    assert not out.result.allowed
    message = out.response["response"]["status"]["message"]
    assert message.startswith(
        "Failed to create virtual machine allocation error: Failed to allocate mac to the vm "
        "object: invalid MAC address format for interface iface1: "
    )
    assert fragment in message
    assert out.response["response"]["status"]["code"] == 422
    assert broker.macs() == []


def test_intra_vm_duplicate_mac_is_refused(broker: FakeBroker) -> None:
    obj = vm(
        [
            {"name": "iface1", "masquerade": {}, "macAddress": "02:00:00:11:22:33"},
            {"name": "iface2", "bridge": {}, "macAddress": "02-00-00-11-22-33"},
        ],
        [{"name": "iface1", "pod": {}}, {"name": "iface2", "multus": {"networkName": "br"}}],
    )
    out = review(broker, obj)
    assert not out.result.allowed
    assert out.result.message == (
        "Failed to create virtual machine allocation error: Failed to allocate mac to the vm "
        "object: duplicate MAC address 02:00:00:11:22:33 found on interfaces: iface1 and iface2"
    )
    assert broker.macs() == []


def test_duplicate_interface_names_are_refused(broker: FakeBroker) -> None:
    obj = vm(
        [
            {"name": "pod", "masquerade": {}},
            {"name": "multus", "bridge": {}},
            {"name": "multus", "bridge": {}},
        ],
        [{"name": "pod", "pod": {}}, {"name": "multus", "multus": {"networkName": "m"}}],
    )
    out = review(broker, obj)
    assert not out.result.allowed
    assert out.result.message is not None
    assert out.result.message.startswith(
        "Failed to create virtual machine allocation error: "
        "Failed to mutate virtual machine: every interface must have a unique name"
    )
    assert "multus" in out.result.message
    assert broker.macs() == []


def test_mac_held_elsewhere_is_refused_naming_pool_and_holder(broker: FakeBroker) -> None:
    requested = [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:11:22:33"}]
    assert review(broker, vm(requested, [POD_NET], name="vm1", namespace="ns1")).result.allowed
    out = review(broker, vm(requested, [POD_NET], name="vm2", namespace="ns2"))
    assert not out.result.allowed
    message = out.response["response"]["status"]["message"]
    assert message.startswith(
        "Failed to create virtual machine allocation error: Failed to allocate mac to the vm "
        "object: failed to allocate requested mac address"
    )
    assert "vm vm1" in message and "/kubernetes/ns1" in message and "pool 'default'" in message
    assert out.response["response"]["status"]["code"] == 409
    assert broker.macs() == ["02:00:00:11:22:33"]


def test_mac_held_elsewhere_is_accepted_when_duplicates_allowed() -> None:
    broker = FakeBroker(allow_duplicates=True)
    requested = [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:11:22:33"}]
    assert review(broker, vm(requested, [POD_NET], name="vm1", namespace="ns1")).result.allowed
    assert review(broker, vm(requested, [POD_NET], name="vm2", namespace="ns2")).result.allowed
    assert broker.macs() == ["02:00:00:11:22:33", "02:00:00:11:22:33"]


def test_failed_claim_stores_nothing(broker: FakeBroker) -> None:
    broker.hold("other", "pod", "p", "net", "02:00:00:11:22:33")
    obj = vm(
        [
            {"name": "default", "masquerade": {}},
            {"name": "br1", "bridge": {}, "macAddress": "02:00:00:11:22:33"},
        ],
        [POD_NET, MULTUS_NET],
    )
    assert not review(broker, obj).result.allowed
    assert broker.macs() == ["02:00:00:11:22:33"]


# --- dry run, nil template, deletion, other operations ----------------------------------------


def test_dry_run_answers_the_same_and_stores_nothing(broker: FakeBroker) -> None:
    two = [{"name": "default", "masquerade": {}}, {"name": "br1", "bridge": {}}]
    out = review(broker, vm(two, [POD_NET, MULTUS_NET]), dry_run=True)
    assert out.result.allowed
    macs = [i["macAddress"] for i in ifaces(out.patched)]
    assert len(set(macs)) == 2
    assert broker.macs() == [] and broker.cursor is None
    assert "claim(dry_run=True)" in broker.calls


def test_nil_template_is_allowed_with_message(broker: FakeBroker) -> None:
    obj = vm([], [])
    del obj["spec"]["template"]
    out = review(broker, obj)
    assert out.response["response"] == {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "allowed": True,
        "status": {
            "code": 200,
            "message": "virtual machine template is nil, ignoring virtual machine",
        },
    }
    assert broker.calls == []


def test_vm_being_deleted_is_not_touched(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    obj["metadata"]["deletionTimestamp"] = "2026-08-04T11:29:00Z"
    out = review(broker, obj, operation="UPDATE", old=obj)
    assert out.result.allowed and out.patch == [] and broker.calls == []


def test_delete_operation_is_allowed_untouched(broker: FakeBroker) -> None:
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    out = review(broker, None, operation="DELETE", old=obj)
    assert out.result.allowed and out.patch == [] and broker.calls == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda o: o["spec"]["template"]["spec"]["domain"]["devices"].update(interfaces="x"),
        lambda o: o["spec"]["template"]["spec"].update(networks=[1]),
        lambda o: o["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0].pop("name"),
    ],
)
def test_malformed_vm_spec_is_refused(broker: FakeBroker, mangle: Any) -> None:
    obj = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    mangle(obj)
    out = review(broker, obj)
    assert not out.result.allowed and out.result.code == 422
    assert broker.macs() == []


def test_generate_name_vms_get_distinct_identities(broker: FakeBroker) -> None:
    masq = [{"name": "default", "masquerade": {}}]
    objs = [vm(masq, [POD_NET], name="") for _ in range(2)]
    for obj in objs:
        obj["metadata"] = {"generateName": "vm-", "namespace": "default"}
    first = review(broker, objs[0], uid="uid-1")
    second = review(broker, objs[1], uid="uid-2")
    assert ifaces(first.patched)[0]["macAddress"] != ifaces(second.patched)[0]["macAddress"]
    assert len(broker.macs()) == 2


# --- UPDATE -------------------------------------------------------------------------------------

TWO = [{"name": "default", "masquerade": {}}, {"name": "br1", "bridge": {}}]


def created(broker: FakeBroker) -> dict[str, Any]:
    """A VM as stored after a successful CREATE."""
    out = review(broker, vm(copy.deepcopy(TWO), [POD_NET, MULTUS_NET]))
    assert out.patched is not None
    return out.patched


def test_update_without_macs_keeps_the_held_ones(broker: FakeBroker) -> None:
    stored = created(broker)
    request = vm(copy.deepcopy(TWO), [POD_NET, MULTUS_NET])  # re-applied YAML, no MACs
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert out.result.allowed
    assert ifaces(out.patched) == ifaces(stored)
    assert out.patched is not None
    assert out.patched["metadata"]["annotations"][TRANSACTION_ANNOTATION] == LATER
    assert len(broker.macs()) == 2


def test_update_registers_macs_of_vms_created_before_macpool(broker: FakeBroker) -> None:
    stored = vm(
        [{"name": "default", "masquerade": {}, "macAddress": "02:99:00:00:00:01"}], [POD_NET]
    )
    request = vm([{"name": "default", "masquerade": {}}], [POD_NET])
    out = review(broker, request, operation="UPDATE", old=stored)
    assert ifaces(out.patched)[0]["macAddress"] == "02:99:00:00:00:01"
    assert broker.macs() == ["02:99:00:00:00:01"]


def test_update_changing_a_mac_moves_the_interface(broker: FakeBroker) -> None:
    stored = created(broker)
    request = copy.deepcopy(stored)
    ifaces(request)[1]["macAddress"] = "02:00:00:00:aa:01"
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert out.result.allowed
    assert [op["path"] for op in out.patch] == [
        "/metadata/annotations/kubemacpool.io~1transaction-timestamp"
    ]
    assert sorted(broker.macs()) == sorted([ifaces(stored)[0]["macAddress"], "02:00:00:00:aa:01"])


def test_update_adding_an_interface_allocates_only_for_it(broker: FakeBroker) -> None:
    stored = created(broker)
    request = copy.deepcopy(stored)
    ifaces(request).append({"name": "another-multus", "bridge": {}})
    request["spec"]["template"]["spec"]["networks"].append(
        {"name": "another-multus", "multus": {"networkName": "m2"}}
    )
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert [op["path"] for op in out.patch][1:] == [
        "/spec/template/spec/domain/devices/interfaces/2/macAddress"
    ]
    assert len(set(i["macAddress"] for i in ifaces(out.patched))) == 3
    assert len(broker.macs()) == 3


def test_update_removing_an_interface_leaves_release_to_the_reconciler(
    broker: FakeBroker,
) -> None:
    stored = created(broker)
    request = copy.deepcopy(stored)
    removed = ifaces(request).pop(1)
    request["spec"]["template"]["spec"]["networks"].pop(1)
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert out.result.allowed
    assert removed["macAddress"] in broker.macs()  # held until the update is persisted
    assert not any(call.startswith("release") for call in broker.calls)


def test_update_with_duplicate_names_uses_update_wording(broker: FakeBroker) -> None:
    stored = created(broker)
    request = copy.deepcopy(stored)
    ifaces(request)[1]["name"] = "default"
    out = review(broker, request, operation="UPDATE", old=stored)
    assert out.result.message is not None
    assert out.result.message.startswith(
        "Failed to update virtual machine allocation error: Failed to mutate virtual machine: "
        "every interface must have a unique name"
    )


def test_update_duplicate_of_a_kept_mac_is_refused(broker: FakeBroker) -> None:
    stored = created(broker)
    request = vm(copy.deepcopy(TWO), [POD_NET, MULTUS_NET])
    ifaces(request)[1]["macAddress"] = ifaces(stored)[0]["macAddress"]
    out = review(broker, request, operation="UPDATE", old=stored)
    assert out.result.message is not None
    assert out.result.message.startswith(
        "Failed to update virtual machine allocation error: duplicate MAC address"
    )


def test_update_preserves_everything_else(broker: FakeBroker) -> None:
    stored = created(broker)
    request = vm(copy.deepcopy(TWO), [POD_NET, MULTUS_NET])
    request["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["io"] = "native-update"
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert out.patched is not None
    disks = out.patched["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
    assert disks[0]["io"] == "native-update"
    assert_only_macs_and_stamp_changed(request, out.patched)


def test_update_without_changes_keeps_the_stamp(broker: FakeBroker) -> None:
    stored = created(broker)
    out = review(broker, copy.deepcopy(stored), operation="UPDATE", old=stored, stamp=LATER)
    assert out.result.allowed and out.patch == []
    status_only = copy.deepcopy(stored)
    status_only["status"] = {"ready": True}
    out = review(broker, status_only, operation="UPDATE", old=stored, stamp=LATER)
    assert out.patch == []


def test_update_label_change_renews_the_stamp(broker: FakeBroker) -> None:
    stored = created(broker)
    request = copy.deepcopy(stored)
    request["metadata"]["labels"] = {"team": "a"}
    out = review(broker, request, operation="UPDATE", old=stored, stamp=LATER)
    assert out.patch == [
        {
            "op": "add",
            "path": "/metadata/annotations/kubemacpool.io~1transaction-timestamp",
            "value": LATER,
        }
    ]


def test_update_exhausted_uses_update_wording() -> None:
    broker = FakeBroker(end=FakeBroker().start + 1)
    stored = created(broker)
    request = copy.deepcopy(stored)
    ifaces(request).append({"name": "extra", "masquerade": {}})
    out = review(broker, request, operation="UPDATE", old=stored)
    assert out.result.message is not None
    assert out.result.message.startswith(
        "Failed to update virtual machine allocation error: the range is full"
    )
