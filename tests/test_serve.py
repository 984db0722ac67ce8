"""The gunicorn application wrapper every MacPool listener runs in."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from manager.wsgi_server import _Gunicorn


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
