"""The reconciler process honours the core settings its database is built from."""
# ruff: noqa: F811 - the fixtures imported from reconciler_harness are parameters here

from __future__ import annotations

import threading
import time

import pytest
from kubernetes.client import ApiClient

from manager.config import Settings
from manager.core.actor import Actor
from manager.db import Database
from manager.services import create_pool, create_scope, list_events
from plugins.kubernetes import reconciler_process
from plugins.kubernetes.clusterstate import is_synced
from plugins.kubernetes.settings import KubernetesSettings
from tests.plugins.kubernetes.reconciler_harness import (  # noqa: F401 - fixtures
    api_client,
    db,
    holdings,
    standin,
)
from tests.plugins.kubernetes.standin import NAMESPACES, VMS, StandInServer, namespace
from tests.plugins.kubernetes.standin import virtual_machine as vm

#: A 20-MAC pool for the cluster: two registered MACs leave 18 free.
RANGE = "0a:00:00:00:40:00-0a:00:00:00:40:13"


def _run_until_synced(settings: Settings, db: Database, api_client: ApiClient) -> None:
    stop = threading.Event()
    thread = threading.Thread(
        target=reconciler_process.run,
        args=(settings,),
        kwargs={"stop": stop, "api_client": api_client},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            with db.session() as session:
                if is_synced(session, KubernetesSettings.of(settings).k8s_cluster_scope):
                    break
            assert time.monotonic() < deadline, "the reconciler did not sync in time"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()


@pytest.mark.parametrize(("threshold", "warned"), [(18, True), (17, False)])
def test_reconciler_allocations_honour_the_low_threshold(
    standin: StandInServer,
    db: Database,
    api_client: ApiClient,
    db_url: str,
    threshold: int,
    warned: bool,
) -> None:
    with db.session(write=True) as session:
        pool = create_pool(session, Actor("t"), name="k8s", ranges=[RANGE])
        create_scope(session, Actor("t"), kind="cluster", name="kubernetes", pool_id=pool.id)
    standin.state.put(NAMESPACES, namespace("apps"))
    standin.state.put(VMS, vm("apps", "a", {"default": "0a:00:00:00:40:01"}))
    standin.state.put(VMS, vm("apps", "b", {"default": "0a:00:00:00:40:02"}))
    settings = Settings(database_url=db_url, low_threshold=threshold, expire_interval=3600)

    _run_until_synced(settings, db, api_client)

    assert holdings(db) == {
        ("apps", "vm", "a", "default"): ("0a:00:00:00:40:01", "allocated"),
        ("apps", "vm", "b", "default"): ("0a:00:00:00:40:02", "allocated"),
    }
    with db.session() as session:
        low = list_events(session, action="pool.low").items
    assert [event.details.get("available") for event in low] == ([18] if warned else [])
