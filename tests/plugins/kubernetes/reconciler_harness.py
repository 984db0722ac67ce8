"""Fixtures and helpers for driving the reconciler through the real client against the stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from sqlalchemy import select

from manager.config import Settings
from manager.core.actor import Actor, Owner
from manager.core.mac import format_mac_int
from manager.db import Allocation, Database, Scope
from manager.services import allocate_mac, bootstrap, ensure_path, ensure_scope
from manager.services.index_cache import forget
from plugins.kubernetes.reconciler import Reconciler
from plugins.kubernetes.settings import KubernetesSettings
from tests.conftest import DEFAULT_RANGE
from tests.plugins.kubernetes.standin import StandInServer

WEBHOOK = Actor("webhook", "webhook")


@pytest.fixture
def standin() -> Iterator[StandInServer]:
    """A running stand-in API server."""
    with StandInServer() as server:
        yield server


@pytest.fixture
def api_client(standin: StandInServer) -> Iterator[ApiClient]:
    """The official client pointed at the stand-in."""
    client = ApiClient(Configuration(host=standin.url))
    yield client
    client.close()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A bootstrapped database (engine scope, default pool) on each backend."""
    from manager.db import Base

    database = Database(db_url)
    Base.metadata.create_all(database.engine)
    with database.session(write=True) as session:
        bootstrap(session, default_range=DEFAULT_RANGE)
    yield database
    with database.session() as session:
        forget(session)
    database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings with the reconciler's defaults and the test database."""
    return KubernetesSettings.within(
        Settings(database_url=db_url, expire_interval=3600), k8s_wait_time=300
    )


@pytest.fixture
def make_reconciler(
    db: Database, settings: Settings, api_client: ApiClient
) -> Iterator[Callable[..., Reconciler]]:
    """Build reconcilers (no Lease unless asked); their watches are stopped afterwards."""
    made: list[Reconciler] = []

    def make(**kwargs: Any) -> Reconciler:
        kwargs.setdefault("use_lease", False)
        kwargs.setdefault("watch_timeout", 2)
        reconciler = Reconciler(db, settings, api_client, **kwargs)
        made.append(reconciler)
        return reconciler

    yield make
    for reconciler in made:
        reconciler.stop_watches()


def pump_until(
    reconciler: Reconciler, condition: Callable[[], bool], *, timeout: float = 10.0
) -> None:
    """Apply watch events until ``condition`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        reconciler.pump(timeout=0.1)


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll ``condition`` (for a reconciler running in its own thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def holdings(db: Database) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    """(namespace, kind, name, interface) → (MAC, state) of every namespace-scope allocation."""
    with db.session() as session:
        rows = session.execute(
            select(Allocation, Scope.name)
            .join(Scope, Scope.id == Allocation.scope_id)
            .where(Scope.kind == "namespace")
        ).all()
        return {
            (ns, a.owner_kind, a.owner_name, a.interface): (format_mac_int(a.mac), a.state)
            for a, ns in rows
        }


def admit(
    db: Database,
    *,
    namespace: str,
    kind: str,
    name: str,
    interface: str,
    mac: str | None = None,
    transaction: str | None = None,
    ttl_seconds: int = 300,
    age_seconds: int = 0,
) -> str:
    """What the webhook's broker does at admission: a pending allocation with a stamp."""
    with db.session(write=True) as session:
        cluster = ensure_path(session, WEBHOOK, "/kubernetes", kinds=["cluster"])
        scope = ensure_scope(session, WEBHOOK, parent=cluster, kind="namespace", name=namespace)
        result = allocate_mac(
            session,
            WEBHOOK,
            scope=scope,
            owner=Owner(kind, name),
            interface=interface,
            mac=mac,
            ttl_seconds=ttl_seconds,
            transaction=transaction,
            now=datetime.now(UTC) - timedelta(seconds=age_seconds),
        )
        return format_mac_int(result.allocation.mac)


__all__ = [
    "admit",
    "api_client",
    "db",
    "holdings",
    "make_reconciler",
    "pump_until",
    "settings",
    "standin",
    "wait_until",
]
