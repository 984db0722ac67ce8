"""A reconciler that cannot work (namespace missing, RBAC, credentials) says so once and waits.

The real API server's answers are in tests/kube/test_readiness.py; here the run loop's
bookkeeping: one log line, the readiness status, quiet retries, recovery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from manager.config import Settings
from plugins.kubernetes.health import reconciler_problem
from plugins.kubernetes.reconciler import Reconciler, blocking_problem
from plugins.kubernetes.settings import KubernetesSettings
from tests.plugins.kubernetes.reconciler_harness import (
    api_client,
    db,
    make_reconciler,
    settings,
    standin,
    wait_until,
)

__all__ = ["api_client", "db", "make_reconciler", "settings", "standin"]


def _status(code: int, reason: str, message: str, **details: str) -> ApiException:
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps(
        {"kind": "Status", "code": code, "reason": reason, "message": message, "details": details}
    )
    return exc


MISSING_NAMESPACE = _status(
    404, "NotFound", 'namespaces "mp" not found', name="mp", kind="namespaces"
)
FORBIDDEN = _status(
    403,
    "Forbidden",
    'leases.coordination.k8s.io "macpool-reconciler" is forbidden: User "x" cannot get resource',
)


def test_blocking_problems_are_named_in_one_line() -> None:
    assert blocking_problem(MISSING_NAMESPACE, namespace="mp") == (
        "namespace 'mp' does not exist: create it (the Lease macpool-reconciler lives there) "
        "or set MACPOOL_K8S_NAMESPACE"
    )
    forbidden = blocking_problem(FORBIDDEN, namespace="mp")
    assert forbidden is not None and forbidden.startswith("forbidden by RBAC")
    assert "cannot get resource" in forbidden
    assert "credentials" in (blocking_problem(ApiException(status=401), namespace="mp") or "")
    assert blocking_problem(ApiException(status=500), namespace="mp") is None
    assert blocking_problem(ApiException(status=409), namespace="mp") is None


@contextlib.contextmanager
def _running(reconciler: Reconciler) -> Iterator[None]:
    """The reconciler's loop in a thread, stopped (and waited for) at the end."""
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


class FlakyElector:
    """Fails with ``error`` until ``fixed`` is set, then holds the Lease."""

    renew_interval = 0.05
    duration_seconds = 15
    namespace = "mp"
    name = "macpool-reconciler"
    identity = "me"

    def __init__(self, error: ApiException) -> None:
        self.holder: str | None = None
        self.error = error
        self.fixed = threading.Event()
        self.tries = 0

    def try_acquire(self) -> bool:
        self.tries += 1
        if not self.fixed.is_set():
            raise self.error
        self.holder = self.identity
        return True

    def release(self) -> None:
        pass


@pytest.mark.parametrize("error", [MISSING_NAMESPACE, FORBIDDEN], ids=["namespace", "rbac"])
def test_one_log_line_a_readiness_reason_then_recovery(
    make_reconciler: Callable[..., Reconciler],
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    error: ApiException,
) -> None:
    elector = FlakyElector(error)
    reconciler = make_reconciler(elector=elector)
    reconciler.settings = KubernetesSettings.within(
        replace(settings, data_dir=tmp_path), k8s_namespace="mp"
    )
    caplog.set_level(logging.INFO, logger="plugins.kubernetes.reconciler")
    with _running(reconciler):
        wait_until(lambda: elector.tries >= 5)
        problem = reconciler_problem(reconciler.settings)
        assert problem == blocking_problem(error, namespace="mp")
        elector.fixed.set()  # e.g. the namespace was created
        # The reason goes once the loop is past the sync (which sets ``synced`` a moment before).
        wait_until(lambda: reconciler.synced and reconciler_problem(reconciler.settings) is None)
    lines = [r for r in caplog.records if r.name == "plugins.kubernetes.reconciler"]
    errors = [r for r in lines if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # not one per retry
    assert errors[0].exc_info is None  # a sentence, not a traceback
    assert str(problem) in errors[0].getMessage()
    assert any("can work again" in r.getMessage() for r in lines)


class HeldElector:
    """Another replica holds the Lease until ``free`` is set; then this one takes it."""

    renew_interval = 0.05
    duration_seconds = 15
    namespace = "mp"
    name = "macpool-reconciler"
    identity = "me"

    def __init__(self) -> None:
        self.holder: str | None = "other-replica"
        self.free = threading.Event()
        self.tries = 0

    def try_acquire(self) -> bool:
        self.tries += 1
        if self.free.is_set():
            self.holder = self.identity
        return self.free.is_set()

    def release(self) -> None:
        pass


def test_standing_by_names_the_holder_once_then_taking_over_is_logged(
    make_reconciler: Callable[..., Reconciler], caplog: pytest.LogCaptureFixture
) -> None:
    """A reconciler waiting for another replica's Lease says so (once), and says when it leads:
    a replica that stood by silently could not be told from a hung one."""
    elector = HeldElector()
    reconciler = make_reconciler(elector=elector)
    caplog.set_level(logging.INFO, logger="plugins.kubernetes.reconciler")
    with _running(reconciler):
        wait_until(lambda: elector.tries >= 4)
        elector.free.set()
        wait_until(lambda: reconciler.synced)
    said = [r.getMessage() for r in caplog.records if r.name == "plugins.kubernetes.reconciler"]
    standing = [m for m in said if m.startswith("standing by")]
    assert standing == [
        "standing by: the Lease mp/macpool-reconciler is held by 'other-replica' (taken over "
        "once it expires, 15 s after its last renewal)"
    ]
    assert "holding the Lease mp/macpool-reconciler as me: reconciling" in said
