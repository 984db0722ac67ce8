"""Effective-pool resolution: the pool of the nearest scope, on the way to the root, that has one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EffectivePool:
    pool_id: int
    #: The scope the pool is assigned to (the scope itself, or the ancestor it inherits from).
    source_scope_id: int
    inherited: bool


def resolve_effective_pool(chain: Sequence[tuple[int, int | None]]) -> EffectivePool | None:
    """Resolve from ``chain``: ``(scope_id, assigned_pool_id)`` pairs, the scope first, root last."""
    for depth, (scope_id, pool_id) in enumerate(chain):
        if pool_id is not None:
            return EffectivePool(pool_id=pool_id, source_scope_id=scope_id, inherited=depth > 0)
    return None


__all__ = ["EffectivePool", "resolve_effective_pool"]
