"""Python's cyclic garbage collector paused around work that builds many long-lived objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection inside (restored on exit, even on error).

    Each full collection walks every live object. Work that holds hundreds of thousands of them
    (a reconciler's full sync, an import's plan being written) paid seconds for collections
    that found next to nothing. Reference counting still frees everything that is not a cycle;
    cycles made meanwhile wait for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


__all__ = ["collector_paused"]
