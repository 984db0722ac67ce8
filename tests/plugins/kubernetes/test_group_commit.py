"""Group commit of admission reviews, on SQLite and PostgreSQL.

Reviews queued while a transaction runs share the next one; a refusal, an error or a dry run in
a batch must cost the other reviews nothing, and every answer must match what the database holds.
A gate inside the first review holds the leader so that the others queue deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from manager.core.actor import Owner
from manager.db import Allocation, AuditEvent, Database, HeldMac, Pool
from manager.services import allocate_mac, bootstrap
from manager.services.index_cache import forget
from plugins.kubernetes.admission import review_pod, review_virtual_machine
from plugins.kubernetes.group_commit import GroupCommit
from plugins.kubernetes.review import AdmissionRequest, AdmissionResult, parse_review
from tests.conftest import ACTOR, DEFAULT_RANGE
from tests.plugins.kubernetes.conftest import POD_GVK, VM_GVK, review_body
from tests.plugins.kubernetes.test_admission_vm import POD_NET, vm

CLUSTER = "/kubernetes"
MASQUERADE = [{"name": "default", "masquerade": {}}]


@pytest.fixture
def batches() -> list[int]:
    """The size of every batch the ``group`` fixture runs, in order (its ``on_batch``)."""
    return []


@pytest.fixture
def group(database: Database, batches: list[int]) -> Iterator[GroupCommit]:
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
    yield GroupCommit(database, cluster_scope=CLUSTER, wait_time=300, on_batch=batches.append)
    with database.session(write=True) as s:
        forget(s)


def _request(
    name: str, *, interfaces: list[dict[str, Any]] | None = None, dry_run: bool = False
) -> AdmissionRequest:
    obj = vm(interfaces or MASQUERADE, [POD_NET], name=name, namespace="team-a")
    return parse_review(review_body(obj, gvk=VM_GVK, dry_run=dry_run))


class Gate:
    """A reviewer that holds the review of ``name`` (once it is in its transaction) until
    opened; other reviews pass straight through. ``fail`` names a review that raises."""

    def __init__(self, name: str, *, fail: str | None = None) -> None:
        self.name, self.fail = name, fail
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, request: AdmissionRequest, *, broker: Any) -> AdmissionResult:
        broker.session  # noqa: B018 - the pre-run without a database stops here
        if request.name == self.name:
            self.entered.set()
            assert self.opened.wait(10)
        if request.name == self.fail:
            raise RuntimeError("the review broke")
        return review_virtual_machine(request, broker=broker)


def _run_all(
    group: GroupCommit, gate: Gate, requests: list[AdmissionRequest]
) -> dict[str, AdmissionResult | BaseException]:
    """Review requests[0] (held at the gate), queue the rest behind it, open the gate."""
    outcomes: dict[str, AdmissionResult | BaseException] = {}

    def review(request: AdmissionRequest) -> None:
        try:
            outcomes[request.name] = group.review(gate, request)
        except BaseException as exc:
            outcomes[request.name] = exc

    threads = [threading.Thread(target=review, args=(requests[0],))]
    threads[0].start()
    assert gate.entered.wait(10)
    for request in requests[1:]:
        thread = threading.Thread(target=review, args=(request,))
        thread.start()
        threads.append(thread)
    _wait_for(lambda: len(group._queue) == len(requests) - 1)
    gate.opened.set()
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive()
    return outcomes


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the reviews did not queue"
        time.sleep(0.005)


def _mac_of(result: AdmissionResult | BaseException) -> str:
    assert isinstance(result, AdmissionResult) and result.allowed, result
    assert result.macs is not None
    return result.macs["default"]


def _stored(database: Database) -> dict[str, str]:
    """VM name → MAC of the stored allocations."""
    with database.session() as s:
        rows = s.execute(select(Allocation.owner_name, Allocation.mac)).all()
    return {name: f"{mac:012x}" for name, mac in rows}


def _colon(mac: str) -> str:
    return mac.replace(":", "")


def test_queued_reviews_share_one_transaction(
    group: GroupCommit, database: Database, batches: list[int]
) -> None:
    requests = [_request(f"vm-{i}") for i in range(6)]
    outcomes = _run_all(group, Gate("vm-0"), requests)
    macs = {name: _mac_of(result) for name, result in outcomes.items()}
    assert len(set(macs.values())) == 6
    assert batches == [1, 5]  # the gated review alone, then the five together
    assert _stored(database) == {name: _colon(mac) for name, mac in macs.items()}
    with database.session() as s:
        created = s.scalar(select(func.count()).where(AuditEvent.action == "allocation.create"))
        pool = s.scalars(select(Pool)).one()
        assert created == 6
        assert pool.held_count == s.scalar(select(func.count()).select_from(HeldMac)) == 6
        states = set(s.scalars(select(Allocation.state)))
    assert states == {"pending"}


def test_a_refusal_in_a_batch_costs_the_others_nothing(
    group: GroupCommit, database: Database, batches: list[int]
) -> None:
    with database.session(write=True) as s:
        taken = allocate_mac(s, ACTOR, scope="/", owner=Owner("host", "h1"), interface="eth0")
        taken_mac = f"{taken.allocation.mac:012x}"
    wanted = ":".join(taken_mac[i : i + 2] for i in range(0, 12, 2))
    clash = [{"name": "default", "masquerade": {}, "macAddress": wanted}]
    requests = [_request("vm-0"), _request("vm-1"), _request("clash", interfaces=clash)]
    requests.append(_request("vm-3"))
    alone = GroupCommit(database, cluster_scope=CLUSTER, wait_time=300)
    expected = alone.review(review_virtual_machine, _request("clash", interfaces=clash))
    assert not expected.allowed

    outcomes = _run_all(group, Gate("vm-0"), requests)
    refused = outcomes.pop("clash")
    assert isinstance(refused, AdmissionResult)
    assert (refused.allowed, refused.code, refused.message) == (
        False,
        expected.code,
        expected.message,
    )
    macs = {name: _mac_of(result) for name, result in outcomes.items()}
    assert _stored(database) == {"h1": taken_mac} | {n: _colon(m) for n, m in macs.items()}
    assert batches == [1, 3]  # the gated review, then three tried together (redone alone)
    # The rolled-back batch left no MAC behind in the index: the next one is the next free.
    after = alone.review(review_virtual_machine, _request("after"))
    assert int(_colon(_mac_of(after)), 16) == max(int(_colon(m), 16) for m in macs.values()) + 1


def test_an_error_in_a_batch_reaches_only_its_own_review(
    group: GroupCommit, database: Database
) -> None:
    requests = [_request(name) for name in ("vm-0", "vm-1", "broken", "vm-3")]
    outcomes = _run_all(group, Gate("vm-0", fail="broken"), requests)
    error = outcomes.pop("broken")
    assert isinstance(error, RuntimeError) and str(error) == "the review broke"
    macs = {name: _mac_of(result) for name, result in outcomes.items()}
    assert _stored(database) == {name: _colon(mac) for name, mac in macs.items()}


def test_a_dry_run_stores_nothing_and_burns_no_mac(group: GroupCommit, database: Database) -> None:
    _run_all(group, Gate("vm-0"), [_request("vm-0"), _request("vm-1")])
    dry = _mac_of(group.review(review_virtual_machine, _request("dry", dry_run=True)))
    real = _mac_of(group.review(review_virtual_machine, _request("real")))
    assert dry == real  # the dry run saw the next free MAC and left it free
    assert set(_stored(database)) == {"vm-0", "vm-1", "real"}


def test_a_retried_create_in_the_same_batch_gets_the_same_mac(
    group: GroupCommit, database: Database
) -> None:
    requests = [_request("vm-0"), _request("twin"), _request("twin")]
    # Both "twin" reviews are keyed by name in the outcomes: run them and read the table.
    outcomes = _run_all(group, Gate("vm-0"), requests)
    assert _stored(database)["twin"] == _colon(_mac_of(outcomes["twin"]))
    with database.session() as s:
        assert s.scalar(select(func.count()).where(Allocation.owner_name == "twin")) == 1


def test_a_pod_without_networks_never_queues(group: GroupCommit, batches: list[int]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"}}
    result = group.review(review_pod, parse_review(review_body(pod, gvk=POD_GVK)))
    assert result.allowed and not result.patch
    assert batches == []


def test_many_threads_get_unique_macs_all_stored(
    group: GroupCommit, database: Database, batches: list[int]
) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for n in range(15):
            mac = _mac_of(group.review(review_virtual_machine, _request(f"vm-{index}-{n}")))
            with lock:
                results.append(mac)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == len(set(results)) == 120
    assert sorted(_stored(database).values()) == sorted(_colon(mac) for mac in results)
    assert sum(batches) == 120


def test_a_failed_writer_turn_fails_one_review_and_the_next_ones_go_on(
    group: GroupCommit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's own review, never taken into a batch, must not be left queued as the next
    leader (its thread is gone: every later review would wait forever)."""
    real_turn = group.database.writer_turn
    failures = iter([OSError("cannot lock the writer queue")])

    def flaky_turn() -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_turn()

    monkeypatch.setattr(group.database, "writer_turn", flaky_turn)
    with pytest.raises(OSError, match="cannot lock"):
        group.review(review_virtual_machine, _request("first"))
    outcome: list[AdmissionResult] = []
    thread = threading.Thread(
        target=lambda: outcome.append(group.review(review_virtual_machine, _request("next"))),
        daemon=True,  # a regression must fail the test, not hang the run
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the next review waits for a leader that is gone"
    assert outcome and outcome[0].allowed
    assert group._queue == []


def test_two_replicas_locking_pools_in_opposite_orders_both_finish(
    group: GroupCommit, database: Database
) -> None:
    """PostgreSQL, several replicas: a plan locks pools as its reviews come, so two batches can
    wait on each other. The database aborts one; its reviews run again alone and all succeed."""
    if database.is_sqlite:
        pytest.skip("one writer at a time on SQLite: batches never hold pool locks together")
    from manager.services import assign_pool, create_pool, ensure_path

    with database.session(write=True) as s:
        ensure_path(s, ACTOR, CLUSTER, kinds=["cluster"])
        for name, block in (("a", "0a"), ("b", "0e")):
            pool = create_pool(
                s,
                ACTOR,
                name=f"pool-{name}",
                ranges=[f"{block}:00:00:00:00:00-{block}:00:00:00:ff:ff"],
            )
            namespace = ensure_path(
                s, ACTOR, f"{CLUSTER}/team-{name}", kinds=["cluster", "namespace"]
            )
            assign_pool(s, ACTOR, namespace, pool.id)
    other = GroupCommit(
        Database(database.url.render_as_string(hide_password=False)),
        cluster_scope=CLUSTER,
        wait_time=300,
    )
    both_hold_one = threading.Barrier(2, timeout=10)
    crossed: set[str] = set()

    runs: list[str] = []

    def crossing(request: AdmissionRequest, *, broker: Any) -> AdmissionResult:
        broker.session  # noqa: B018 - queue (no run without the database)
        runs.append(request.name)
        if request.name.startswith("second") and request.name not in crossed:
            crossed.add(request.name)  # the redo alone does not wait again
            both_hold_one.wait()  # each batch holds its first pool's lock now
        return review_virtual_machine(request, broker=broker)

    def request(name: str, team: str) -> AdmissionRequest:
        obj = vm(MASQUERADE, [POD_NET], name=name, namespace=f"team-{team}")
        return parse_review(review_body(obj, gvk=VM_GVK))

    outcomes: dict[str, AdmissionResult] = {}
    gates = []
    threads = []
    for commit, first, second in ((group, "a", "b"), (other, "b", "a")):
        gate = Gate(f"hold-{first}")
        gates.append(gate)
        reviews = [request(f"hold-{first}", first), request(f"first-{first}", first)]
        reviews.append(request(f"second-{second}", second))

        def run(
            commit: GroupCommit = commit, gate: Gate = gate, reviews: list[Any] = reviews
        ) -> None:
            def one(review: AdmissionRequest) -> None:
                reviewer = gate if review.name.startswith("hold") else crossing
                outcomes[review.name] = commit.review(reviewer, review)

            held = threading.Thread(target=one, args=(reviews[0],))
            held.start()
            assert gate.entered.wait(10)
            queued = [threading.Thread(target=one, args=(r,)) for r in reviews[1:]]
            for thread in queued:
                thread.start()
            _wait_for(lambda: len(commit._queue) == 2)
            gate.opened.set()
            for thread in (held, *queued):
                thread.join(30)

        threads.append(threading.Thread(target=run))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert sorted(outcomes) == ["first-a", "first-b", "hold-a", "hold-b", "second-a", "second-b"]
    # One batch was aborted by the deadlock and its reviews ran again, alone.
    assert sorted(name for name in set(runs) if runs.count(name) == 2) in (
        ["first-a", "second-b"],
        ["first-b", "second-a"],
    )
    macs = [_mac_of(result) for result in outcomes.values()]
    assert len(set(macs)) == 6
    assert {mac[:2] for name, mac in zip(outcomes, macs, strict=True) if name.endswith("-a")} == {
        "0a"
    }
    other.database.dispose()
