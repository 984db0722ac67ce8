"""Helpers shared by the service tests: row counts and small pools."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.db import (
    Allocation,
    ApiToken,
    AuditEvent,
    HeldMac,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
    User,
)
from manager.services import create_pool

TABLES = (Pool, PoolRange, PoolChange, Scope, HeldMac, Allocation, AuditEvent, User, ApiToken)


def row_counts(session: Session) -> dict[str, int]:
    """How many rows each table holds (to prove a refused call wrote nothing)."""
    session.flush()
    return {
        model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
        for model in TABLES
    }


PoolFactory = Callable[..., Pool]


@pytest.fixture
def make_pool(session: Session, actor: Actor) -> PoolFactory:
    """Create a pool named ``name`` with the given ranges (text ``START-END``)."""

    def make(name: str, *ranges: str, allow_duplicates: bool = False) -> Pool:
        return create_pool(
            session, actor, name=name, ranges=list(ranges), allow_duplicates=allow_duplicates
        )

    return make
