"""First start: the engine scope and the default pool, idempotent and safe across replicas."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from manager.core.actor import SYSTEM
from manager.db import Pool, Scope
from manager.services.pools import ensure_default_pool
from manager.services.scopes import ensure_engine


@dataclass(frozen=True, slots=True)
class Bootstrap:
    engine: Scope
    default_pool: Pool
    created: bool


def bootstrap(session: Session, *, default_range: str | None = None) -> Bootstrap:
    """Create the engine scope and the default pool when they do not exist yet."""
    pool, created = ensure_default_pool(session, SYSTEM, default_range=default_range)
    engine = ensure_engine(session, SYSTEM, default_pool=pool)
    return Bootstrap(engine=engine, default_pool=pool, created=created)


__all__ = ["Bootstrap", "bootstrap"]
