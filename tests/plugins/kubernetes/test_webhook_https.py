"""AdmissionReviews posted over real HTTPS to the running webhook (uvicorn workers + TLS + SQLite).

Every returned patch is applied with jsonpatch (strict RFC 6902) to the original object, and the
MACs are checked against the database: held by the right owner, in the right pool, unique.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests
from sqlalchemy import text

from manager.core.actor import Actor
from manager.core.mac import format_mac_int, parse_mac
from manager.db import Allocation, Base, Database, Scope
from manager.services import assign_pool, create_pool, find_allocations, get_scope
from plugins.kubernetes.admission import (
    RANGE_FULL,
    REQUESTED_IN_USE,
    TEMPLATE_NIL_MESSAGE,
    VM_ALLOCATE_PREFIX,
    VM_CREATE_PREFIX,
    VM_UPDATE_PREFIX,
)
from plugins.kubernetes.patches import TRANSACTION_ANNOTATION
from plugins.kubernetes.review import MAX_REVIEW_BYTES
from plugins.kubernetes.service_broker import namespace_scope
from tests.conftest import POSTGRES_URL
from tests.plugins.kubernetes.conftest import POD_GVK, VERSIONS, VM_GVK, review_body
from tests.plugins.kubernetes.reconciler_harness import wait_until
from tests.plugins.kubernetes.test_admission_vm import MULTUS_NET, POD_NET, ifaces, vm
from tests.plugins.kubernetes.webhook_harness import DEFAULT_RANGE, Webhook, running_webhook

NETWORKS = "k8s.v1.cni.cncf.io/networks"
ACTOR = Actor("test-setup")
DEFAULT_START, DEFAULT_END = (int(parse_mac(m)) for m in DEFAULT_RANGE.split("-"))
_pool_numbers = itertools.count(1)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def webhook(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhook]:
    """The listener on SQLite, and on PostgreSQL when MACPOOL_TEST_POSTGRES_URL is set."""
    extra: dict[str, str] = {}
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip("MACPOOL_TEST_POSTGRES_URL is not set")
        empty = Database(POSTGRES_URL)
        with empty.engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        empty.dispose()
        extra["MACPOOL_DATABASE_URL"] = POSTGRES_URL
    with running_webhook(tmp_path_factory.mktemp("webhook"), **extra) as running:
        yield running


@pytest.fixture(scope="module")
def client(webhook: Webhook) -> Iterator[requests.Session]:
    with webhook.session() as session:
        yield session


@pytest.fixture
def ns() -> str:
    """A namespace no other test uses, so tests share one server without interfering."""
    return f"ns-{uuid.uuid4().hex[:10]}"


@dataclass
class Answer:
    """A decoded response and the object after its patch."""

    status: int
    response: dict[str, Any]
    patch: list[dict[str, Any]]
    patched: dict[str, Any] | None

    @property
    def allowed(self) -> bool:
        return bool(self.response["allowed"])

    @property
    def message(self) -> str:
        return str(self.response.get("status", {}).get("message", ""))

    @property
    def code(self) -> int:
        return int(self.response.get("status", {}).get("code", 200))


def admit(
    client: requests.Session,
    webhook: Webhook,
    obj: dict[str, Any] | None,
    *,
    gvk: dict[str, str] = VM_GVK,
    path: str = "/mutate-virtualmachines",
    **kwargs: Any,
) -> Answer:
    """POST a review over HTTPS; check the envelope; apply the patch with jsonpatch."""
    uid = str(uuid.uuid4())
    version = kwargs.pop("version", "admission.k8s.io/v1")
    body = review_body(obj, gvk=gvk, uid=uid, version=version, **kwargs)
    reply = client.post(webhook.url + path, data=body, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    document = reply.json()
    assert document["apiVersion"] == version
    assert document["kind"] == "AdmissionReview"
    response = document["response"]
    assert response["uid"] == uid
    patch: list[dict[str, Any]] = []
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(obj, patch) if obj is not None else None
    return Answer(reply.status_code, response, patch, patched)


def held(
    webhook: Webhook, ns: str, name: str, *, kind: str = "vm"
) -> dict[str, tuple[int, str, str, str | None]]:
    """Interface → (MAC, pool name, state, transaction) of the owner, from the database."""
    with webhook.database.session() as session:
        try:
            scope = get_scope(session, f"/kubernetes/{ns}")
        except Exception:
            return {}
        page = find_allocations(
            session, scope_id=scope.id, owner_kind=kind, owner_name=name, limit=100
        )
        return {a.interface: (a.mac, a.pool.name, a.state, a.transaction) for a in page.items}


def holders_of(webhook: Webhook, mac: int) -> int:
    with webhook.database.session() as session:
        return find_allocations(session, mac=format_mac_int(mac), limit=1).total


def own_pool(webhook: Webhook, ns: str, *, size: int = 256, duplicates: bool = False) -> str:
    """Give the namespace its own pool (a fresh, non-overlapping range); returns its name."""
    number = next(_pool_numbers)
    start = 0x0A_00_00_00_00_00 + number * 0x1_0000
    first, last = format_mac_int(start), format_mac_int(start + size - 1)
    name = f"pool-{ns}"
    with webhook.database.session(write=True) as session:
        scope = namespace_scope(session, ACTOR, cluster_scope="/kubernetes", namespace=ns)
        assert scope is not None
        pool = create_pool(
            session, ACTOR, name=name, ranges=[f"{first}-{last}"], allow_duplicates=duplicates
        )
        assign_pool(session, ACTOR, scope, pool.id)
    return name


def masquerade_vm(ns: str, name: str = "vm1", **kwargs: Any) -> dict[str, Any]:
    return vm([{"name": "default", "masquerade": {}}], [POD_NET], name=name, namespace=ns, **kwargs)


def two_nic_vm(
    ns: str, name: str = "vm2", macs: tuple[str | None, str | None] = (None, None)
) -> dict[str, Any]:
    interfaces: list[dict[str, Any]] = [
        {"name": "default", "masquerade": {}},
        {"name": "br1", "bridge": {}},
    ]
    for iface, mac in zip(interfaces, macs, strict=True):
        if mac is not None:
            iface["macAddress"] = mac
    return vm(interfaces, [POD_NET, MULTUS_NET], name=name, namespace=ns)


def macs_of(obj: dict[str, Any] | None) -> dict[str, int]:
    return {i["name"]: int(parse_mac(i["macAddress"])) for i in ifaces(obj) if "macAddress" in i}


def assert_only_macs_and_stamp_changed(before: dict[str, Any], after: dict[str, Any]) -> None:
    scrubbed = copy.deepcopy(after)
    for iface, original in zip(ifaces(scrubbed), ifaces(before), strict=True):
        if "macAddress" not in original:
            iface.pop("macAddress", None)
    annotations = scrubbed["metadata"].get("annotations", {})
    annotations.pop(TRANSACTION_ANNOTATION, None)
    original_annotations = before["metadata"].get("annotations")
    if original_annotations is None:
        scrubbed["metadata"].pop("annotations", None)
    elif TRANSACTION_ANNOTATION in original_annotations:
        annotations[TRANSACTION_ANNOTATION] = original_annotations[TRANSACTION_ANNOTATION]
    assert scrubbed == before


def wait_recorded(webhook: Webhook, answer: Answer, ns: str, name: str) -> None:
    """Until the database holds the answer's MACs for the VM: an answer from MACs reserved
    ahead is recorded within a second (docs/RESERVED_MACS.md)."""
    assert answer.patched is not None
    expected = macs_of(answer.patched)

    def recorded() -> bool:
        return {iface: row[0] for iface, row in held(webhook, ns, name).items()} == expected

    wait_until(recorded, timeout=1.0)


def assert_stored(webhook: Webhook, answer: Answer, ns: str, name: str, *, pool: str) -> None:
    """The patched VM's MACs are exactly what the database holds for it, pending, stamped.

    A MAC kept from an earlier review keeps that review's (older) stamp: the reconciler confirms
    once the stored VM carries a stamp at least as new.
    """
    assert answer.patched is not None
    stamp = answer.patched["metadata"]["annotations"][TRANSACTION_ANNOTATION]
    wait_recorded(webhook, answer, ns, name)
    rows = held(webhook, ns, name)
    for mac, pool_name, state, transaction in rows.values():
        assert pool_name == pool
        assert state == "pending"
        assert transaction is not None and transaction <= stamp
        assert holders_of(webhook, mac) == 1


# --- VM CREATE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_create_masquerade_vm_gets_a_default_pool_mac(
    client: requests.Session, webhook: Webhook, ns: str, version: str
) -> None:
    obj = masquerade_vm(ns)
    answer = admit(client, webhook, obj, version=version)
    assert answer.allowed
    assert [op["op"] for op in answer.patch] == ["add", "add"]
    assert_only_macs_and_stamp_changed(obj, answer.patched or {})
    assert DEFAULT_START <= macs_of(answer.patched)["default"] <= DEFAULT_END
    assert_stored(webhook, answer, ns, "vm1", pool="Default")


def test_create_multus_and_masquerade_interfaces_get_distinct_macs(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = two_nic_vm(ns)
    answer = admit(client, webhook, obj)
    assert answer.allowed
    macs = macs_of(answer.patched)
    assert set(macs) == {"default", "br1"} and len(set(macs.values())) == 2
    assert_only_macs_and_stamp_changed(obj, answer.patched or {})
    assert_stored(webhook, answer, ns, "vm2", pool="Default")


def test_bridge_on_pod_network_gets_only_the_stamp(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = vm([{"name": "default", "bridge": {}}], [POD_NET], name="plain", namespace=ns)
    answer = admit(client, webhook, obj)
    assert answer.allowed
    assert [op["path"] for op in answer.patch] == ["/metadata/annotations"]
    assert macs_of(answer.patched) == {}
    assert held(webhook, ns, "plain") == {}


def test_requested_free_mac_is_registered_without_interface_patch(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = two_nic_vm(ns, macs=("02:00:00:00:f0:01", None))
    answer = admit(client, webhook, obj)
    assert answer.allowed
    assert not any("/interfaces/0/" in op["path"] for op in answer.patch)
    assert macs_of(answer.patched)["default"] == 0x02_00_00_00_F0_01
    assert_stored(webhook, answer, ns, "vm2", pool="Default")


def test_requested_mac_held_by_another_vm_is_refused_naming_pool_and_holder(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    first = admit(client, webhook, masquerade_vm(ns, "holder"))
    mac = ifaces(first.patched)[0]["macAddress"]
    obj = vm(
        [{"name": "nic", "masquerade": {}, "macAddress": mac}],
        [POD_NET],
        name="thief",
        namespace=ns,
    )
    answer = admit(client, webhook, obj)
    assert not answer.allowed
    assert answer.code == 409
    assert answer.message.startswith(VM_CREATE_PREFIX + VM_ALLOCATE_PREFIX + REQUESTED_IN_USE)
    assert "vm holder" in answer.message and "pool 'Default'" in answer.message
    assert held(webhook, ns, "thief") == {}


def test_refusal_of_the_second_interface_stores_nothing_for_the_first(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    taken = macs_of(admit(client, webhook, masquerade_vm(ns, "holder")).patched)["default"]
    mac = format_mac_int(taken)
    answer = admit(client, webhook, two_nic_vm(ns, "partial", macs=(None, mac)))
    assert not answer.allowed
    assert held(webhook, ns, "partial") == {}


@pytest.mark.parametrize(
    ("mac", "fragment"),
    [
        ("not-a-mac", "invalid MAC address format"),
        ("01:00:5e:00:00:01", "invalid MAC address format"),  # multicast
        ("00:00:00:00:00:00", "invalid MAC address format"),
    ],
)
def test_invalid_requested_mac_is_refused(
    client: requests.Session, webhook: Webhook, ns: str, mac: str, fragment: str
) -> None:
    obj = vm(
        [{"name": "nic", "masquerade": {}, "macAddress": mac}], [POD_NET], name="bad", namespace=ns
    )
    answer = admit(client, webhook, obj)
    assert not answer.allowed and answer.code == 422
    assert answer.message.startswith(VM_CREATE_PREFIX + VM_ALLOCATE_PREFIX)
    assert fragment in answer.message
    assert held(webhook, ns, "bad") == {}


def test_the_same_mac_twice_in_one_vm_is_refused(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    answer = admit(client, webhook, two_nic_vm(ns, macs=("02:00:00:00:f1:01", "02:00:00:00:f1:01")))
    assert not answer.allowed and answer.code == 422
    assert "duplicate MAC address" in answer.message
    assert held(webhook, ns, "vm2") == {}


def test_duplicate_interface_names_are_refused(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    interfaces = [{"name": "nic", "masquerade": {}}, {"name": "nic", "bridge": {}}]
    answer = admit(client, webhook, vm(interfaces, [POD_NET], name="twins", namespace=ns))
    assert not answer.allowed and answer.code == 422
    assert "unique name" in answer.message


def test_retried_create_gets_the_same_mac(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    first = admit(client, webhook, masquerade_vm(ns))
    second = admit(client, webhook, masquerade_vm(ns))
    assert macs_of(first.patched) == macs_of(second.patched)
    assert len(held(webhook, ns, "vm1")) == 1


def test_generate_name_vm_is_held_under_a_placeholder(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = masquerade_vm(ns)
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "gen-"
    answer = admit(client, webhook, obj, name="")
    assert answer.allowed

    def names() -> list[str]:
        with webhook.database.session() as session:
            scope = get_scope(session, f"/kubernetes/{ns}")
            found = find_allocations(session, scope_id=scope.id, owner_kind="vm").items
            return [a.owner_name for a in found]

    wait_until(lambda: len(names()) == 1, timeout=1.0)  # recorded within a second
    assert names()[0].startswith("gen-{admission:")


def test_vm_without_template_is_allowed_with_kubemacpool_message(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "t", "namespace": ns},
        "spec": {},
    }
    answer = admit(client, webhook, obj)
    assert answer.allowed and answer.patch == []
    assert answer.message == TEMPLATE_NIL_MESSAGE


def test_vm_being_deleted_is_allowed_untouched(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = masquerade_vm(ns)
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    answer = admit(client, webhook, obj)
    assert answer.allowed and answer.patch == []
    assert held(webhook, ns, "vm1") == {}


def test_delete_operation_is_allowed_without_side_effects(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    created = admit(client, webhook, masquerade_vm(ns))
    wait_recorded(webhook, created, ns, "vm1")
    answer = admit(client, webhook, None, operation="DELETE", old=created.patched)
    assert answer.allowed and answer.patch == []
    assert len(held(webhook, ns, "vm1")) == 1


# --- dry run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_dry_run_create_answers_the_same_and_stores_nothing(
    client: requests.Session, webhook: Webhook, ns: str, version: str
) -> None:
    obj = two_nic_vm(ns)
    answer = admit(client, webhook, obj, dry_run=True, version=version)
    assert answer.allowed
    macs = macs_of(answer.patched)
    assert set(macs) == {"default", "br1"} and len(set(macs.values())) == 2
    assert held(webhook, ns, "vm2") == {}
    with webhook.database.session() as session:
        assert session.query(Scope).filter(Scope.path == f"/kubernetes/{ns}").count() == 0


def test_dry_run_with_a_mac_in_use_is_refused_too(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    mac = ifaces(admit(client, webhook, masquerade_vm(ns, "holder")).patched)[0]["macAddress"]
    obj = vm(
        [{"name": "nic", "masquerade": {}, "macAddress": mac}], [POD_NET], name="dry", namespace=ns
    )
    answer = admit(client, webhook, obj, dry_run=True)
    assert not answer.allowed and REQUESTED_IN_USE in answer.message


def test_dry_run_update_keeps_the_database_as_it_was(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    answer = admit(client, webhook, two_nic_vm(ns))
    wait_recorded(webhook, answer, ns, "vm2")
    created = answer.patched
    assert created is not None
    before = held(webhook, ns, "vm2")
    changed = copy.deepcopy(created)
    ifaces(changed)[1]["macAddress"] = "02:00:00:00:f2:02"
    answer = admit(client, webhook, changed, operation="UPDATE", old=created, dry_run=True)
    assert answer.allowed
    assert held(webhook, ns, "vm2") == before


# --- VM UPDATE ---------------------------------------------------------------------------------


def _created(client: requests.Session, webhook: Webhook, obj: dict[str, Any]) -> dict[str, Any]:
    answer = admit(client, webhook, obj)
    assert answer.allowed and answer.patched is not None
    metadata = answer.patched["metadata"]
    wait_recorded(webhook, answer, metadata["namespace"], metadata["name"])
    return answer.patched


def test_update_keeps_macs_of_interfaces_that_omit_them(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, two_nic_vm(ns))
    new = two_nic_vm(ns)  # the user re-applies the original manifest: no MACs
    new["spec"]["runStrategy"] = "Halted"
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed
    assert macs_of(answer.patched) == macs_of(stored)
    assert_stored(webhook, answer, ns, "vm2", pool="Default")


def test_update_adding_an_interface_gives_it_a_new_mac(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, masquerade_vm(ns, "grow"))
    new = copy.deepcopy(stored)
    ifaces(new).append({"name": "br1", "bridge": {}})
    new["spec"]["template"]["spec"]["networks"].append(MULTUS_NET)
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed
    macs = macs_of(answer.patched)
    assert macs["default"] == macs_of(stored)["default"] and "br1" in macs
    assert {k: v[0] for k, v in held(webhook, ns, "grow").items()} == macs


def test_update_changing_a_mac_moves_the_hold(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, masquerade_vm(ns, "mover"))
    old_mac = macs_of(stored)["default"]
    new = copy.deepcopy(stored)
    ifaces(new)[0]["macAddress"] = "02:00:00:00:f3:03"
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed
    assert held(webhook, ns, "mover")["default"][0] == 0x02_00_00_00_F3_03
    assert holders_of(webhook, old_mac) == 0


def test_update_swapping_macs_between_interfaces_is_allowed(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, two_nic_vm(ns, "swap"))
    macs = ifaces(stored)
    new = copy.deepcopy(stored)
    ifaces(new)[0]["macAddress"], ifaces(new)[1]["macAddress"] = (
        macs[1]["macAddress"],
        macs[0]["macAddress"],
    )
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed, answer.message
    rows = held(webhook, ns, "swap")
    assert rows["default"][0] == macs_of(stored)["br1"]
    assert rows["br1"][0] == macs_of(stored)["default"]


def test_update_renaming_an_interface_keeps_its_mac(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, masquerade_vm(ns, "renamed"))
    mac = macs_of(stored)["default"]
    new = copy.deepcopy(stored)
    ifaces(new)[0]["name"] = "eth0"
    new["spec"]["template"]["spec"]["networks"][0]["name"] = "eth0"
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed, answer.message
    assert {k: v[0] for k, v in held(webhook, ns, "renamed").items()} == {"eth0": mac}
    assert holders_of(webhook, mac) == 1


def test_update_removing_an_interface_keeps_its_mac_until_the_reconciler_sees_it(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, two_nic_vm(ns, "shrink"))
    new = copy.deepcopy(stored)
    del ifaces(new)[1]
    del new["spec"]["template"]["spec"]["networks"][1]
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert answer.allowed
    assert set(held(webhook, ns, "shrink")) == {"default", "br1"}


def test_update_without_changes_gets_no_new_stamp(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    stored = _created(client, webhook, masquerade_vm(ns, "same"))
    answer = admit(client, webhook, copy.deepcopy(stored), operation="UPDATE", old=stored)
    assert answer.allowed and answer.patch == []


def test_update_refusal_uses_the_update_wording(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    taken = ifaces(_created(client, webhook, masquerade_vm(ns, "holder")))[0]["macAddress"]
    stored = _created(client, webhook, masquerade_vm(ns, "other"))
    new = copy.deepcopy(stored)
    ifaces(new)[0]["macAddress"] = taken
    answer = admit(client, webhook, new, operation="UPDATE", old=stored)
    assert not answer.allowed and answer.code == 409
    assert answer.message.startswith(VM_UPDATE_PREFIX + REQUESTED_IN_USE)
    assert held(webhook, ns, "other")["default"][0] == macs_of(stored)["default"]


# --- pools and scopes --------------------------------------------------------------------------


def test_namespace_with_its_own_pool_gets_macs_from_it(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    pool = own_pool(webhook, ns)
    answer = admit(client, webhook, two_nic_vm(ns))
    assert answer.allowed
    assert all(mac >> 40 == 0x0A for mac in macs_of(answer.patched).values())
    assert_stored(webhook, answer, ns, "vm2", pool=pool)


def test_exhausted_pool_refuses_with_kubemacpool_wording_and_pool_name(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    pool = own_pool(webhook, ns, size=2)
    assert admit(client, webhook, two_nic_vm(ns, "fills")).allowed
    answer = admit(client, webhook, masquerade_vm(ns, "late"))
    assert not answer.allowed and answer.code == 409
    assert answer.message.startswith(VM_CREATE_PREFIX + VM_ALLOCATE_PREFIX + RANGE_FULL)
    assert f"pool '{pool}'" in answer.message
    assert held(webhook, ns, "late") == {}


def test_duplicates_are_accepted_where_every_pool_allows_them_and_show_in_metrics(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    own_pool(webhook, ns, duplicates=True)
    first = _created(client, webhook, masquerade_vm(ns, "first"))
    mac = ifaces(first)[0]["macAddress"]
    obj = vm(
        [{"name": "nic", "masquerade": {}, "macAddress": mac}],
        [POD_NET],
        name="second",
        namespace=ns,
    )
    answer = admit(client, webhook, obj)
    assert answer.allowed, answer.message
    assert holders_of(webhook, int(parse_mac(mac))) == 2
    metrics = client.get(webhook.url + "/metrics", timeout=10).text
    assert f'kmp_mac_collisions{{mac="{parse_mac(mac)}"}} 2.0' in metrics
    duplicates = [
        line for line in metrics.splitlines() if line.startswith("kubevirt_kmp_duplicate_macs ")
    ]
    assert duplicates and float(duplicates[0].split()[1]) >= 1


def test_concurrent_creations_never_share_a_mac(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    def create(index: int) -> dict[str, int]:
        with webhook.session() as own:
            answer = admit(own, webhook, two_nic_vm(ns, f"par-{index}"))
            assert answer.allowed, answer.message
            return macs_of(answer.patched)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(create, range(24)))
    macs = [mac for result in results for mac in result.values()]
    assert len(macs) == 48 and len(set(macs)) == 48

    def stored() -> set[int]:
        with webhook.database.session() as session:
            scope = get_scope(session, f"/kubernetes/{ns}")
            # Filter in the query: the namespace's reserved-ahead rows share the scope and
            # can sort before the VMs' MACs, so a page of the whole scope may miss some.
            found = find_allocations(session, scope_id=scope.id, owner_kind="vm", limit=100)
            assert found.total <= 100
            return {a.mac for a in found.items}

    # Answers from MACs reserved ahead are recorded within a second (docs/RESERVED_MACS.md).
    wait_until(lambda: stored() == set(macs), timeout=1.0)


# --- Pods --------------------------------------------------------------------------------------


def pod(ns: str, networks: str | None, *, name: str = "pod1", **annotations: str) -> dict[str, Any]:
    notes = dict(annotations)
    if networks is not None:
        notes[NETWORKS] = networks
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": notes},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def admit_pod(
    client: requests.Session, webhook: Webhook, obj: dict[str, Any], **kwargs: Any
) -> Answer:
    return admit(client, webhook, obj, gvk=POD_GVK, path="/mutate-pods", **kwargs)


@pytest.mark.parametrize("version", VERSIONS)
def test_pod_networks_get_macs_and_namespace_and_keep_other_keys(
    client: requests.Session, webhook: Webhook, ns: str, version: str
) -> None:
    networks = json.dumps(
        [
            {"name": "br1", "interface": "net1", "x-extra": {"k": 1}},
            {"name": "br2", "namespace": "other"},
        ]
    )
    obj = pod(ns, networks)
    answer = admit_pod(client, webhook, obj, version=version)
    assert answer.allowed
    assert [op["path"] for op in answer.patch] == [
        "/metadata/annotations/k8s.v1.cni.cncf.io~1networks"
    ]
    assert answer.patched is not None
    elements = json.loads(answer.patched["metadata"]["annotations"][NETWORKS])
    assert elements[0]["x-extra"] == {"k": 1} and elements[0]["interface"] == "net1"
    assert elements[0]["namespace"] == ns and elements[1]["namespace"] == "other"
    macs = {int(parse_mac(e["mac"])) for e in elements}
    assert len(macs) == 2
    assert {row[0] for row in held(webhook, ns, "pod1", kind="pod").values()} == macs
    scrubbed = copy.deepcopy(answer.patched)
    scrubbed["metadata"]["annotations"][NETWORKS] = networks
    assert scrubbed == obj


def test_pod_requested_mac_is_kept_and_registered(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    networks = json.dumps([{"name": "br1", "namespace": ns, "mac": "02:00:00:00:f4:04"}])
    answer = admit_pod(client, webhook, pod(ns, networks))
    assert answer.allowed and answer.patch == []
    assert [row[0] for row in held(webhook, ns, "pod1", kind="pod").values()] == [
        0x02_00_00_00_F4_04
    ]


def test_pod_requesting_a_vm_mac_is_refused(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    mac = ifaces(_created(client, webhook, masquerade_vm(ns, "vmholder")))[0]["macAddress"]
    answer = admit_pod(client, webhook, pod(ns, json.dumps([{"name": "br1", "mac": mac}])))
    assert not answer.allowed and answer.code == 409
    assert answer.message.startswith(REQUESTED_IN_USE) and "vm vmholder" in answer.message
    assert held(webhook, ns, "pod1", kind="pod") == {}


@pytest.mark.parametrize(
    ("networks", "extra"),
    [
        pytest.param(None, {}, id="no-annotation"),
        pytest.param("br1,br2", {}, id="comma-form"),
        pytest.param("[]", {}, id="empty-list"),
        pytest.param(
            '[{"name":"br1"}]', {"k8s.v1.cni.cncf.io/network-status": "[]"}, id="network-status"
        ),
    ],
)
def test_pods_skipped_by_kubemacpool_are_allowed_untouched(
    client: requests.Session, webhook: Webhook, ns: str, networks: str | None, extra: dict[str, str]
) -> None:
    answer = admit_pod(client, webhook, pod(ns, networks, **extra))
    assert answer.allowed and answer.patch == []
    assert held(webhook, ns, "pod1", kind="pod") == {}


def test_virt_launcher_pod_is_skipped(client: requests.Session, webhook: Webhook, ns: str) -> None:
    obj = pod(ns, '[{"name":"br1"}]')
    obj["metadata"]["labels"] = {"kubevirt.io": "virt-launcher"}
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "name": "x",
            "uid": "u",
            "controller": True,
        }
    ]
    answer = admit_pod(client, webhook, obj)
    assert answer.allowed and answer.patch == []


def test_pod_with_broken_networks_json_is_refused_with_400(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    answer = admit_pod(client, webhook, pod(ns, '[{"name": "br1"'))
    assert not answer.allowed and answer.code == 400
    assert held(webhook, ns, "pod1", kind="pod") == {}


def test_pod_dry_run_stores_nothing(client: requests.Session, webhook: Webhook, ns: str) -> None:
    answer = admit_pod(client, webhook, pod(ns, '[{"name":"br1"}]'), dry_run=True)
    assert answer.allowed and len(answer.patch) == 1
    assert held(webhook, ns, "pod1", kind="pod") == {}


def test_pod_update_is_allowed_untouched(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    obj = pod(ns, '[{"name":"br1"}]')
    answer = admit_pod(client, webhook, obj, operation="UPDATE", old=obj)
    assert answer.allowed and answer.patch == []


# --- transport: malformed, oversized, routing -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not json", id="not-json"),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {}}',
            id="unknown-version",
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', id="no-request"
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {"kind": "Pod"}, "operation": "CREATE"}}',
            id="no-uid",
        ),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(b"", id="empty"),
    ],
)
@pytest.mark.parametrize("path", ["/mutate-virtualmachines", "/mutate-pods"])
def test_malformed_reviews_get_400(
    client: requests.Session, webhook: Webhook, body: bytes, path: str
) -> None:
    reply = client.post(webhook.url + path, data=body, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]


def test_oversized_review_gets_413(webhook: Webhook) -> None:
    body = b" " * (MAX_REVIEW_BYTES + 1)
    with webhook.session() as own:
        reply = own.post(webhook.url + "/mutate-virtualmachines", data=body, timeout=30)
    assert reply.status_code == 413


def test_oversized_chunked_review_gets_413(webhook: Webhook) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * (1024 * 1024)

    with webhook.session() as own:
        reply = own.post(webhook.url + "/mutate-pods", data=chunks(), timeout=30)
    assert reply.status_code == 413


def test_review_just_under_the_limit_is_read(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    body = review_body(masquerade_vm(ns), gvk=VM_GVK, dry_run=True)
    padded = body + b" " * (MAX_REVIEW_BYTES - len(body))
    reply = client.post(webhook.url + "/mutate-virtualmachines", data=padded, timeout=30)
    assert reply.status_code == 200 and reply.json()["response"]["allowed"] is True


def test_get_on_a_review_path_is_405(client: requests.Session, webhook: Webhook) -> None:
    reply = client.get(webhook.url + "/mutate-virtualmachines", timeout=10)
    assert reply.status_code == 405 and reply.headers["Allow"] == "POST"


def test_unknown_path_is_404(client: requests.Session, webhook: Webhook) -> None:
    assert client.post(webhook.url + "/mutate-nodes", data=b"{}", timeout=10).status_code == 404


def test_noop_handler_allows_and_echoes(
    client: requests.Session, webhook: Webhook, ns: str
) -> None:
    answer = admit(
        client, webhook, masquerade_vm(ns), path="/mutate-noop", version="admission.k8s.io/v1beta1"
    )
    assert answer.allowed and answer.patch == []
    assert held(webhook, ns, "vm1") == {}


def test_healthz_and_admission_metrics(client: requests.Session, webhook: Webhook) -> None:
    assert client.get(webhook.url + "/healthz", timeout=10).json() == {"status": "ok"}
    metrics = client.get(webhook.url + "/metrics", timeout=10).text
    assert (
        'macpool_webhook_admissions_total{resource="virtualmachines",result="patched"}' in metrics
    )
    assert "macpool_webhook_admission_duration_seconds_bucket" in metrics


def test_plain_http_is_not_served(webhook: Webhook) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(webhook.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_server_certificate_names_the_service(webhook: Webhook) -> None:
    from cryptography import x509

    from plugins.kubernetes.certificates import dns_names

    pem = (Path(webhook.env["MACPOOL_DATA_DIR"]) / "webhook-tls" / "tls.crt").read_bytes()
    names = dns_names(x509.load_pem_x509_certificate(pem))
    assert names == [
        "localhost",
        "localhost.macpool",
        "localhost.macpool.svc",
        "localhost.macpool.svc.cluster.local",
    ]


def test_allocations_table_has_only_webhook_rows_in_cluster_scope(webhook: Webhook) -> None:
    """Every allocation the tests caused is under /kubernetes and was made by the webhook."""
    with webhook.database.session() as session:
        rows = session.query(Allocation).all()
        assert rows
        assert all(row.scope.path.startswith("/kubernetes/") for row in rows)
        assert all(row.created_by == "webhook:kubernetes-webhook" for row in rows)
