"""VM CREATE reviews answered from MACs reserved ahead (plugins.kubernetes.reserve).

The invariants of docs/RESERVED_MACS.md, each shown on a real database with the webhook's WSGI
application in process: answers are recorded within a second; a retry gets the same MAC; a
pool change is seen at the next review; a MAC answered by a process that died is adopted by
the reconciler from the object; reservations never used return within the wait time.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from manager.core.actor import Actor, Owner
from manager.core.errors import DatabaseUnavailable
from manager.core.mac import parse_mac
from manager.db import Allocation, Database
from manager.services import assign_pool, create_pool, list_scopes
from manager.services.bootstrap import bootstrap
from manager.services.owners import align_owner
from manager.services.reservations import RESERVATION_KIND
from plugins.kubernetes import reserve as reserve_module
from plugins.kubernetes.reserve import MAX_BLOCK, MIN_BLOCK, ReservedMacs, block_size
from plugins.kubernetes.server import WebhookApp
from tests.plugins.kubernetes.conftest import VM_GVK, review_body
from tests.plugins.kubernetes.reconciler_harness import wait_until
from tests.plugins.kubernetes.test_admission_vm import POD_NET, vm

NS = "team"
ACTOR = Actor("tester")


@pytest.fixture
def app(database: Database) -> Iterator[WebhookApp]:
    with database.session(write=True) as session:
        bootstrap(session, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
    webhook = WebhookApp(database, cluster_scope="/kubernetes", wait_time=300, reserve_ahead=True)
    yield webhook
    assert webhook.reserved is not None
    webhook.reserved.close()


def _create(
    app: WebhookApp, name: str, *, operation: str = "CREATE", namespace: str = NS, **kwargs: Any
) -> str:
    """Admit a one-NIC VM; the MAC it was given."""
    obj = kwargs.pop("obj", None) or vm([{"name": "nic", "masquerade": {}}], [POD_NET], name=name)
    obj["metadata"]["namespace"] = namespace
    body = review_body(obj, gvk=VM_GVK, operation=operation, uid=str(uuid.uuid4()), **kwargs)
    reply = Client(app).post("/mutate-virtualmachines", data=body)
    assert reply.status_code == 200
    response = json.loads(reply.get_data())["response"]
    assert response["allowed"], response
    if operation == "UPDATE":
        return ""
    patch = json.loads(base64.b64decode(response["patch"]))
    return next(op["value"] for op in patch if op["path"].endswith("/macAddress"))


def _rows(database: Database) -> list[tuple[int, int, str, str, str]]:
    with database.session() as session:
        return [
            (a.id, a.mac, a.owner_kind, a.owner_name, a.state)
            for a in session.scalars(select(Allocation).order_by(Allocation.id))
        ]


def _reserved(database: Database) -> dict[int, int]:
    """MAC → reservation id of every reservation."""
    return {mac: id_ for id_, mac, kind, _, _ in _rows(database) if kind == RESERVATION_KIND}


def _warm(app: WebhookApp, database: Database) -> dict[int, int]:
    """Reviews through the ordinary path: the first creates the namespace, the second finds
    no reserve for its pool and asks for one."""
    _create(app, "first")
    _create(app, "second")
    wait_until(lambda: len(_reserved(database)) > 0, timeout=5)
    return _reserved(database)


def test_answers_come_from_the_reserve_and_are_recorded_within_a_second(
    app: WebhookApp, database: Database
) -> None:
    reserved = _warm(app, database)
    macs = [int(parse_mac(_create(app, f"vm{i}"))) for i in range(5)]
    answered = time.monotonic()
    assert set(macs) <= set(reserved)  # answered without allocating anything new

    def recorded() -> bool:
        rows = {mac: (id_, kind, state) for id_, mac, kind, _, state in _rows(database)}
        return all(rows[mac] == (reserved[mac], "vm", "pending") for mac in macs)

    wait_until(recorded, timeout=1.0)
    assert time.monotonic() - answered < 1.0
    samples = app.metrics.paths.collect()[0].samples
    paths = {s.labels["path"]: s.value for s in samples if s.name.endswith("_total")}
    assert paths["reserved"] == 5  # counted for operators: the share answered without a write
    assert len({mac for _, mac, *_ in _rows(database)}) == len(_rows(database))


def _paths(app: WebhookApp) -> dict[str, float]:
    samples = app.metrics.paths.collect()[0].samples
    return {s.labels["path"]: s.value for s in samples if s.name.endswith("_total")}


def _scope_paths(database: Database) -> set[str]:
    with database.session() as session:
        return {scope.path for scope in list_scopes(session)}


def test_the_first_vm_of_a_new_namespace_is_answered_from_the_reserve_without_a_write(
    app: WebhookApp, database: Database
) -> None:
    """A namespace's first VM waits for no write: it gets a reserved MAC of the pool its scope
    will inherit, and the recorder makes the scope before it records the answer (within a
    second, as every answer)."""
    reserved = _warm(app, database)
    before = _paths(app)
    mac = int(parse_mac(_create(app, "vm-a", namespace="fresh")))
    assert mac in reserved
    assert _paths(app)["reserved"] == before.get("reserved", 0) + 1
    assert _paths(app).get("transaction", 0) == before.get("transaction", 0)
    # A second VM before the recording: also from the reserve.
    second = int(parse_mac(_create(app, "vm-b", namespace="fresh")))
    assert second in reserved and second != mac
    assert _paths(app).get("transaction", 0) == before.get("transaction", 0)
    # A retry of the first gets its MAC again (the process remembers its answers by scope
    # path; the retry names its MAC, so the write path checks it).
    assert int(parse_mac(_create(app, "vm-a", namespace="fresh"))) == mac

    def recorded() -> bool:
        with database.session() as session:
            rows = session.scalars(select(Allocation).where(Allocation.mac.in_([mac, second])))
            return sorted((a.owner_name, a.scope.path) for a in rows) == [
                ("vm-a", "/kubernetes/fresh"),
                ("vm-b", "/kubernetes/fresh"),
            ]

    wait_until(recorded, timeout=1.0)
    assert "/kubernetes/fresh" in _scope_paths(database)


def test_a_refused_or_dry_run_first_vm_makes_no_scope(app: WebhookApp, database: Database) -> None:
    _warm(app, database)
    twice = {"name": "a", "masquerade": {}, "macAddress": "02:00:00:00:aa:01"}
    networks = [{"name": "a", "pod": {}}, {"name": "b", "multus": {"networkName": "br1"}}]
    refused = vm([twice, {**twice, "name": "b"}], networks, name="x")
    refused["metadata"]["namespace"] = "refused"
    body = review_body(refused, gvk=VM_GVK, uid=str(uuid.uuid4()))
    response = json.loads(Client(app).post("/mutate-virtualmachines", data=body).get_data())
    assert not response["response"]["allowed"]
    dry = vm([{"name": "nic", "masquerade": {}}], [POD_NET], name="y")
    dry["metadata"]["namespace"] = "dry"
    body = review_body(dry, gvk=VM_GVK, uid=str(uuid.uuid4()), dry_run=True)
    response = json.loads(Client(app).post("/mutate-virtualmachines", data=body).get_data())
    assert response["response"]["allowed"]
    assert not {"/kubernetes/refused", "/kubernetes/dry"} & _scope_paths(database)


def test_a_retried_create_gets_the_same_mac_before_and_after_recording(
    app: WebhookApp, database: Database
) -> None:
    _warm(app, database)
    first = _create(app, "retry")
    assert _create(app, "retry") == first  # likely before the record
    wait_until(lambda: any(r[3] == "retry" and r[2] == "vm" for r in _rows(database)), timeout=1)
    assert _create(app, "retry") == first
    assert [r for r in _rows(database) if r[3] == "retry"] == [
        (r[0], int(parse_mac(first)), "vm", "retry", "pending")
        for r in _rows(database)
        if r[3] == "retry"
    ]
    assert len([r for r in _rows(database) if r[3] == "retry"]) == 1


def test_recorded_answers_are_remembered_for_the_ledger_ttl_only(
    app: WebhookApp, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process ledger of answers (for retries) keeps a recorded answer LEDGER_TTL
    seconds, then forgets it: memory stays bounded by the recent rate, and a later retry
    reads the database instead."""
    monkeypatch.setattr(reserve_module, "LEDGER_TTL", 0.3)
    _warm(app, database)
    reserved = app.reserved
    assert reserved is not None
    old = _create(app, "old")
    wait_until(lambda: any(r[3] == "old" and r[2] == "vm" for r in _rows(database)), timeout=1)
    names = lambda: {key[2] for key in reserved._ledger}  # noqa: E731
    assert "old" in names()
    time.sleep(0.4)
    _create(app, "new")
    wait_until(lambda: "old" not in names(), timeout=1)
    assert "new" in names()
    assert _create(app, "old") == old  # a retry after that reads it from the database


def test_a_pool_assigned_to_the_namespace_is_used_by_the_next_review(
    app: WebhookApp, database: Database
) -> None:
    old = _warm(app, database)
    with database.session(write=True) as session:
        pool = create_pool(
            session, ACTOR, name="team-pool", ranges=["0a:00:00:00:00:00-0a:00:00:00:ff:ff"]
        )
        assign_pool(session, ACTOR, f"/kubernetes/{NS}", pool.id)
    mac = _create(app, "after-change")
    assert mac.startswith("0a:00:00"), mac  # never a MAC reserved from the old pool
    # The old pool's reservations go back.
    wait_until(lambda: not set(old) & set(_reserved(database)), timeout=2)


def test_an_update_right_after_a_create_sees_the_unrecorded_answer(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ordinary path first writes what the reserve answered (the recorder is idle here)."""
    monkeypatch.setattr(ReservedMacs, "_run", lambda self: None)
    with database.session(write=True) as session:
        bootstrap(session, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
    app = WebhookApp(database, cluster_scope="/kubernetes", wait_time=300, reserve_ahead=True)
    assert app.reserved is not None
    _create(app, "first")
    _create(app, "second")
    app.reserved.record_now(take_turn=True, refill=True)  # what the recorder thread would do
    mac = _create(app, "vm1")
    assert [r for r in _rows(database) if r[3] == "vm1"] == []  # not recorded yet
    stored = vm([{"name": "nic", "masquerade": {}, "macAddress": mac}], [POD_NET], name="vm1")
    stored["metadata"]["namespace"] = NS
    changed = json.loads(json.dumps(stored))
    changed["metadata"]["labels"] = {"app": "x"}
    _create(app, "vm1", operation="UPDATE", obj=changed, old=stored)
    rows = [r for r in _rows(database) if r[3] == "vm1"]
    assert [(r[1], r[2]) for r in rows] == [(int(parse_mac(mac)), "vm")]


def test_a_mac_answered_by_a_process_that_died_is_adopted_from_the_object(
    app: WebhookApp, database: Database
) -> None:
    reserved = _warm(app, database)
    assert app.reserved is not None
    thread = app.reserved._thread
    assert thread is not None
    app.reserved._stopping.set()  # the recorder stops: like kill -9 before it recorded
    app.reserved._wake.set()
    thread.join(timeout=5)
    app.reserved._stopping.clear()
    mac = int(parse_mac(_create(app, "orphan")))
    assert _rows(database)[-1][2] != "vm" or all(r[3] != "orphan" for r in _rows(database))
    assert {r[0] for r in _rows(database) if r[1] == mac} == {reserved[mac]}
    # Nobody else can take it meanwhile, and the reconciler reads it back from the VM.
    with database.session(write=True) as session:
        result = align_owner(
            session,
            ACTOR,
            scope=f"/kubernetes/{NS}",
            owner=Owner("vm", "orphan", "uid-1"),
            observed={"nic": mac},
            settled=lambda stamp: True,
        )
    assert result.registered == 1 and result.refused == {}
    assert [r for r in _rows(database) if r[1] == mac] == [
        (reserved[mac], mac, "vm", "orphan", "allocated")
    ]
    app.reserved._pending.clear()  # what died with the process
    app.reserved._thread = None


def test_reservations_never_used_return_within_the_wait_time(database: Database) -> None:
    with database.session(write=True) as session:
        bootstrap(session, default_range="02:00:00:00:00:00-02:00:00:ff:ff:ff")
    wait_time = 4
    app = WebhookApp(database, cluster_scope="/kubernetes", wait_time=wait_time, reserve_ahead=True)
    assert app.reserved is not None
    try:
        _warm(app, database)
        reserved_at = time.monotonic()
        wait_until(lambda: not _reserved(database), timeout=wait_time + 1)
        assert time.monotonic() - reserved_at <= wait_time
    finally:
        app.reserved.close()
    assert [r[2] for r in _rows(database)] == ["vm", "vm"]


def test_after_close_reviews_take_the_write_path_and_a_second_close_is_harmless(
    app: WebhookApp, database: Database
) -> None:
    _warm(app, database)
    assert app.reserved is not None
    app.reserved.close()
    assert not _reserved(database)  # every unused reservation went back
    mac = int(parse_mac(_create(app, "late")))
    assert [(r[1], r[2], r[3]) for r in _rows(database) if r[1] == mac] == [(mac, "vm", "late")]
    assert not _reserved(database)  # no new reserve was started after close
    app.reserved.close()


def test_close_with_the_database_away_logs_and_returns(
    app: WebhookApp, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _warm(app, database)
    assert app.reserved is not None

    def away(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable

    app.reserved.record_now = away  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        app.reserved.close()
    assert "unused reservations expire within the wait time" in caplog.text


def test_blocks_follow_the_demand_within_bounds() -> None:
    # A steady 200 VMs/s: about two seconds of it, so a refill is rare and its cost spread.
    assert block_size(20, 0.1) == 400
    # Idle: back to the smallest block; a burst after quiet: at least twice what went.
    assert block_size(0, 60.0) == MIN_BLOCK
    assert block_size(10, 100.0) == 20
    # Never more than MAX_BLOCK per pool and process.
    assert block_size(600, 0.1) == MAX_BLOCK
    # After a busy spell, a quiet one halves the block at each refill instead of resetting it.
    assert block_size(10, 100.0, MAX_BLOCK) == MAX_BLOCK // 2
    assert block_size(10, 100.0, MAX_BLOCK // 2) == MAX_BLOCK // 4
    assert block_size(0, 60.0, 2 * MIN_BLOCK) == MIN_BLOCK
