"""Pod admission: the Multus networks annotation gets MACs; everything else stays."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from plugins.kubernetes.admission import review_pod
from plugins.kubernetes.multus import BAD_JSON_PREFIX, EMPTY_ANNOTATION_MESSAGE
from plugins.kubernetes.objects import observe_pod
from tests.plugins.kubernetes.conftest import POD_GVK, VERSIONS, Outcome, review_body, run_review
from tests.plugins.kubernetes.fakes import FakeBroker

NETWORKS = "k8s.v1.cni.cncf.io/networks"


def pod(
    networks: str | None,
    *,
    name: str = "newPod",
    namespace: str = "ns",
    extra_annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    annotations = dict(extra_annotations or {})
    if networks is not None:
        annotations[NETWORKS] = networks
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": annotations}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def review(broker: FakeBroker, obj: dict[str, Any], **kwargs: Any) -> Outcome:
    return run_review(review_pod, review_body(obj, gvk=POD_GVK, **kwargs), broker)


def networks_of(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert obj is not None
    value: list[dict[str, Any]] = json.loads(obj["metadata"]["annotations"][NETWORKS])
    return value


@pytest.mark.parametrize("version", VERSIONS)
def test_single_network_gets_mac_and_namespace(broker: FakeBroker, version: str) -> None:
    obj = pod('[{ "name": "ovs-conf"}]', extra_annotations={"other": "x"})
    out = review(broker, obj, version=version)
    assert out.result.allowed
    assert len(out.patch) == 1
    assert out.patch[0]["path"] == "/metadata/annotations/k8s.v1.cni.cncf.io~1networks"
    (mac,) = broker.macs()
    assert networks_of(out.patched) == [{"name": "ovs-conf", "namespace": "ns", "mac": mac}]
    assert out.patched is not None
    # Nothing but that annotation changed.
    expected = copy.deepcopy(obj)
    expected["metadata"]["annotations"][NETWORKS] = out.patched["metadata"]["annotations"][NETWORKS]
    assert out.patched == expected


def test_requested_mac_is_kept_and_unknown_keys_survive(broker: FakeBroker) -> None:
    elements = [
        {"name": "net1", "ips": ["10.0.0.1/24"], "mac": "02:00:00:00:00:00", "x-custom": {"a": 1}},
        {"name": "net2", "namespace": "other", "mac": "02:F0:F0:F0:F0:F0", "cni-args": {"k": 1}},
    ]
    out = review(broker, pod(json.dumps(elements)))
    assert out.result.allowed
    got = networks_of(out.patched)
    assert got[0] == {**elements[0], "namespace": "ns"}
    assert got[1] == elements[1]
    assert broker.macs() == ["02:00:00:00:00:00", "02:f0:f0:f0:f0:f0"]


def test_complete_annotation_is_not_patched(broker: FakeBroker) -> None:
    out = review(broker, pod('[{"name":"n","namespace":"ns","mac":"02:00:00:00:00:05"}]'))
    assert out.result.allowed and out.patch == []
    assert broker.macs() == ["02:00:00:00:00:05"]


def test_same_network_twice_gets_two_macs(broker: FakeBroker) -> None:
    out = review(broker, pod('[{"name":"n"},{"name":"n"}]'))
    macs = [element["mac"] for element in networks_of(out.patched)]
    assert len(set(macs)) == 2 and sorted(macs) == broker.macs()


def test_own_namespace_written_out_names_the_same_interface_as_the_reconciler(
    broker: FakeBroker,
) -> None:
    """``ns/net`` in a pod of ``ns`` is the network ``net``: admission stores the interface under
    the key the reconciler later reads from the patched pod, so it never churns the MAC."""
    networks = '[{"name":"net","namespace":"ns"},{"name":"blue","namespace":"other"}]'
    out = review(broker, pod(networks))
    assert sorted(key[3] for key in broker.store) == ["net", "other/blue"]
    assert out.patched is not None
    observed = observe_pod(out.patched)
    stored = {key[3]: held.mac for key, held in broker.store.items()}
    assert observed.macs == stored


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(pod(None), id="no-annotation"),
        pytest.param(pod("ovs-conf"), id="comma-form-single"),
        pytest.param(pod("net1,ns2/net2@eth1"), id="comma-form"),
        pytest.param(pod("[]"), id="empty-list"),
        pytest.param(
            pod('[{"name":"n"}]', extra_annotations={"k8s.v1.cni.cncf.io/network-status": "[]"}),
            id="network-status",
        ),
        pytest.param(
            pod('[{"name":"n"}]', labels={"kubevirt.io": "virt-launcher"}), id="virt-launcher"
        ),
    ],
)
def test_skipped_pods_are_allowed_untouched(broker: FakeBroker, obj: dict[str, Any]) -> None:
    out = review(broker, obj)
    assert out.result.allowed and out.patch == []
    assert broker.macs() == []
    assert not any(call.startswith("claim") for call in broker.calls)


def test_pod_owned_by_a_vmi_is_skipped(broker: FakeBroker) -> None:
    obj = pod('[{"name":"n"}]')
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "x", "uid": "u"}
    ]
    assert review(broker, obj).patch == []
    assert broker.macs() == []


def test_pod_without_annotations_is_allowed(broker: FakeBroker) -> None:
    obj = pod(None)
    del obj["metadata"]["annotations"]
    assert review(broker, obj).patch == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", EMPTY_ANNOTATION_MESSAGE),
        ("  ", EMPTY_ANNOTATION_MESSAGE),
        ('[{"name": "n", "ips": "10.10.0.1"}]', BAD_JSON_PREFIX),
        ('[{"name": ', BAD_JSON_PREFIX),
        ('{"name": "n"}', BAD_JSON_PREFIX),
        ('["n"]', BAD_JSON_PREFIX),
        ('[{"namespace": "x"}]', BAD_JSON_PREFIX),
        ('[{"name": "n", "mac": 5}]', BAD_JSON_PREFIX),
        ("[" * 100000, BAD_JSON_PREFIX),
    ],
)
def test_unreadable_annotation_is_refused(broker: FakeBroker, value: str, message: str) -> None:
    out = review(broker, pod(value))
    assert not out.result.allowed
    assert out.response["response"]["status"]["message"].startswith(message)
    assert broker.macs() == []


@pytest.mark.parametrize("mac", ["01:00:00:00:00:01", "zz", "00:00:00:00:00:00"])
def test_bad_requested_pod_mac_is_refused(broker: FakeBroker, mac: str) -> None:
    out = review(broker, pod(json.dumps([{"name": "n", "mac": mac}])))
    assert not out.result.allowed
    assert out.result.message is not None
    assert out.result.message.startswith("invalid MAC address format for interface n: ")


def test_duplicate_mac_inside_a_pod_is_refused(broker: FakeBroker) -> None:
    value = json.dumps(
        [{"name": "a", "mac": "02:00:00:00:00:09"}, {"name": "b", "mac": "02-00-00-00-00-09"}]
    )
    out = review(broker, pod(value))
    assert (
        out.result.message == "duplicate MAC address 02:00:00:00:00:09 found on interfaces: a and b"
    )


def test_mac_held_by_another_pod_is_refused(broker: FakeBroker) -> None:
    value = '[{"name":"n","mac":"02:00:00:00:00:09"}]'
    assert review(broker, pod(value, name="first")).result.allowed
    out = review(broker, pod(value, name="second"))
    assert not out.result.allowed and out.result.code == 409
    assert out.result.message is not None
    assert out.result.message.startswith("failed to allocate requested mac address")
    assert "pod first" in out.result.message and "pool 'default'" in out.result.message


def test_shared_pod_mac_is_accepted_when_duplicates_allowed() -> None:
    broker = FakeBroker(allow_duplicates=True)
    value = '[{"name":"n","mac":"02:00:00:00:00:09"}]'
    assert review(broker, pod(value, name="first")).result.allowed
    assert review(broker, pod(value, name="second")).result.allowed
    assert broker.macs() == ["02:00:00:00:00:09"] * 2


def test_exhausted_pool_is_refused_with_range_full() -> None:
    broker = FakeBroker(end=FakeBroker().start)
    assert review(broker, pod('[{"name":"n"}]', name="first")).result.allowed
    out = review(broker, pod('[{"name":"n"}]', name="second"))
    assert out.result.message is not None
    assert out.result.message.startswith("the range is full")


def test_dry_run_pod_stores_nothing(broker: FakeBroker) -> None:
    out = review(broker, pod('[{"name":"a"},{"name":"b"}]'), dry_run=True)
    macs = {element["mac"] for element in networks_of(out.patched)}
    assert len(macs) == 2 and broker.macs() == []


def test_generate_name_pods_do_not_share_macs(broker: FakeBroker) -> None:
    macs = set()
    for uid in ("u1", "u2"):
        obj = pod('[{"name":"n"}]', name="")
        obj["metadata"]["generateName"] = "web-"
        del obj["metadata"]["name"]
        out = review(broker, obj, uid=uid)
        macs.add(networks_of(out.patched)[0]["mac"])
    assert len(macs) == 2


def test_pod_update_is_not_touched(broker: FakeBroker) -> None:
    obj = pod('[{"name":"n"}]')
    out = review(broker, obj, operation="UPDATE", old=obj)
    assert out.result.allowed and out.patch == [] and broker.calls == []
