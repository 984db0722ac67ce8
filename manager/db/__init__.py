"""Persistence: SQLAlchemy 2 typed models and the engine/session factory."""

from manager.db import generation as generation
from manager.db.base import Base, utcnow
from manager.db.models import (
    Allocation,
    ApiToken,
    AuditEvent,
    ClusterState,
    Generation,
    HeldMac,
    ImportJob,
    LoginFailure,
    Pool,
    PoolChange,
    PoolRange,
    Scope,
    User,
)
from manager.db.session import Database, UnitOfWork

__all__ = [
    "Allocation",
    "ApiToken",
    "AuditEvent",
    "Base",
    "ClusterState",
    "Database",
    "Generation",
    "HeldMac",
    "ImportJob",
    "LoginFailure",
    "Pool",
    "PoolChange",
    "PoolRange",
    "Scope",
    "UnitOfWork",
    "User",
    "utcnow",
]
