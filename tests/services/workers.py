"""Code run in child processes by the concurrency tests (importable under spawn)."""

from __future__ import annotations

from typing import Any

from manager.core.actor import Actor, Owner
from manager.core.errors import PoolExhausted
from manager.db import Database
from manager.services import allocate_mac


def allocate_until_exhausted(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Allocate one MAC per transaction from scope /dc until the pool is exhausted.

    Puts ``(worker, macs, error)`` on ``results``; ``error`` is None unless something other
    than exhaustion stopped the loop.
    """
    database = Database(url)
    actor = Actor(f"worker{worker}")
    macs: list[int] = []
    error: str | None = None
    barrier.wait()
    try:
        while True:
            with database.session(write=True) as session:
                result = allocate_mac(
                    session,
                    actor,
                    scope="/dc",
                    owner=Owner("vm", f"w{worker}-{len(macs)}"),
                    interface="nic0",
                )
                macs.append(result.allocation.mac)
    except PoolExhausted:
        pass
    except Exception as exc:  # reported to the test, which fails with it
        error = f"{type(exc).__name__}: {exc}"
    finally:
        database.dispose()
    results.put((worker, macs, error))


def allocate_same_owners(url: str, worker: int, owners: int, barrier: Any, results: Any) -> None:
    """Allocate for owners ``vm/o0`` … one transaction each, as every other worker does too.

    The workers send identical requests (a retrying webhook or automation): puts
    ``(worker, {owner: (mac, created)}, error)`` on ``results``.
    """
    database = Database(url)
    actor = Actor(f"worker{worker}")
    got: dict[str, tuple[int, bool]] = {}
    error: str | None = None
    barrier.wait()
    try:
        for i in range(owners):
            name = f"o{i}"
            with database.session(write=True) as session:
                result = allocate_mac(
                    session, actor, scope="/dc", owner=Owner("vm", name), interface="nic0"
                )
                got[name] = (result.allocation.mac, result.created)
    except Exception as exc:  # reported to the test, which fails with it
        error = f"{type(exc).__name__}: {exc}"
    finally:
        database.dispose()
    results.put((worker, got, error))
