"""The gunicorn application wrapper every MacPool listener runs in."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from manager import serve as serve_module
from manager.core.actor import Owner
from manager.db import Database
from manager.services import allocate_mac, bootstrap, expire_pending, find_allocations
from manager.wsgi_server import _Gunicorn
from tests.conftest import ACTOR, DEFAULT_RANGE


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_a_worker_freezes_what_it_loaded_out_of_the_cyclic_collector() -> None:
    """Full collections must not walk the modules and the app (a 40-60 ms pause per pass)."""
    built: list[object] = []

    def factory() -> object:
        app = {"routes": [object() for _ in range(100)]}
        built.append(app)
        return app

    loader = _Gunicorn(factory, {"bind": ["127.0.0.1:0"]})
    assert gc.get_freeze_count() == 0
    app = loader.load()
    assert app is built[0]
    assert gc.get_freeze_count() > 0
    assert not any(obj is app for obj in gc.get_objects())  # frozen objects are not tracked


def test_the_sweep_expires_in_short_transactions(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead import's staged rows (10^5 of them) must not hold the write lock in one go."""
    with database.session(write=True) as s:
        bootstrap(s, default_range=DEFAULT_RANGE)
        for i in range(5):
            allocate_mac(
                s,
                ACTOR,
                scope="/",
                owner=Owner("vm", f"vm{i}"),
                interface="e",
                ttl_seconds=1,
                now=datetime.now(UTC) - timedelta(hours=1),
            )
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> int:
        released = expire_pending(*args, **kwargs)
        calls.append(released)
        return released

    monkeypatch.setattr(serve_module, "EXPIRE_BATCH", 2)
    monkeypatch.setattr(serve_module, "expire_pending", counted)
    assert serve_module._expire(database) == 5
    assert calls == [2, 2, 1]
    with database.session() as s:
        assert find_allocations(s).total == 0
