"""SQLAlchemy 2 typed models.

Uniqueness rules live here as constraints, the last guard behind the services:
- ``held_macs.mac`` is a primary key: a MAC is held at most once system-wide. Duplicates (only
  where every pool involved allows them) are extra ``allocations`` rows on the same held MAC.
- ``allocations`` are unique per owner identity (scope, owner kind, owner name, interface).
- ``pools.name_key`` (lower-cased name) is unique; one row at most has ``is_default``.
- ``scopes.path`` is unique; names are unique among siblings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from manager.db.base import Base, utcnow


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    name_key: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    allow_duplicates: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The last MAC this pool handed out (next-fit cursor), persisted across restarts.
    cursor: Mapped[int | None] = mapped_column(nullable=True)
    #: Held MACs inside this pool's ranges, kept in step with ``held_macs``.
    held_count: Mapped[int] = mapped_column(default=0)
    #: Distinct MACs held by this pool's allocations outside its ranges, and distinct MACs of
    #: its allocations that another allocation holds too (see manager.services.pool_counters).
    external_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    duplicate_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: Change counter and random token of the last change; processes validate their cached
    #: allocator index against these (see manager.services.index_cache).
    revision: Mapped[int] = mapped_column(default=0)
    index_token: Mapped[int] = mapped_column(default=0)
    #: Whether a low-availability warning has been recorded since availability last recovered.
    low_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    ranges: Mapped[list[PoolRange]] = relationship(
        back_populates="pool",
        cascade="all, delete-orphan",
        order_by="PoolRange.start_mac",
        lazy="selectin",
    )

    __table_args__ = (
        Index(
            "uq_pools_single_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )


class PoolRange(Base):
    __tablename__ = "pool_ranges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    start_mac: Mapped[int] = mapped_column()
    end_mac: Mapped[int] = mapped_column()

    pool: Mapped[Pool] = relationship(back_populates="ranges")

    __table_args__ = (
        CheckConstraint("start_mac <= end_mac", name="bounds_ordered"),
        CheckConstraint("start_mac > 0 AND end_mac < 281474976710656", name="bounds_48bit"),
        Index("ix_pool_ranges_bounds", "start_mac", "end_mac"),
    )


class PoolChange(Base):
    """One change to the held MACs inside a pool's ranges; ``mac`` NULL means 'reload'."""

    __tablename__ = "pool_changes"

    pool_id: Mapped[int] = mapped_column(
        ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    mac: Mapped[int | None] = mapped_column(nullable=True)
    held: Mapped[bool] = mapped_column(Boolean)
    token: Mapped[int] = mapped_column()


class Scope(Base):
    __tablename__ = "scopes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("scopes.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    path: Mapped[str] = mapped_column(String(2048), unique=True)
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("pools.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("parent_id", "name"),
        CheckConstraint(
            "kind IN ('engine', 'datacenter', 'cluster', 'namespace')", name="kind_valid"
        ),
    )


class HeldMac(Base):
    """A MAC held by at least one allocation; the primary key makes holding it exclusive."""

    __tablename__ = "held_macs"

    mac: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class Allocation(Base):
    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[int] = mapped_column(ForeignKey("held_macs.mac", ondelete="RESTRICT"))
    #: The requester's effective pool when the MAC was allocated.
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="RESTRICT"), index=True)
    scope_id: Mapped[int] = mapped_column(ForeignKey("scopes.id", ondelete="RESTRICT"))
    owner_kind: Mapped[str] = mapped_column(String(64))
    owner_name: Mapped[str] = mapped_column(String(512))
    owner_uid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    interface: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="allocated")
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    in_range: Mapped[bool] = mapped_column(Boolean, default=True)
    #: An opaque stamp of the change that asked for the MAC, e.g. the KubeVirt VM's
    #: ``kubemacpool.io/transaction-timestamp``; confirms pending allocations once persisted.
    transaction: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: A migration hand-over: ``pending`` while the MAC still belongs to the VM it was moved
    #: from (releasing it gives it back), ``final`` once the move is done; NULL otherwise.
    handover: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: The allocation as it was before the hand-over (owner, scope, interface, pool, state) and
    #: the migration's plan and migration ids: what a pending hand-over is reverted to.
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: While the hand-over is pending: the owner identity it was taken from, as one string
    #: (``manager.services.handovers.identity_key``). That identity stays taken until the
    #: hand-over is final or reverted, so the MAC can always go back to it; NULL otherwise.
    source_key: Mapped[str | None] = mapped_column(String(1100), nullable=True)

    scope: Mapped[Scope] = relationship(lazy="joined")
    pool: Mapped[Pool] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("scope_id", "owner_kind", "owner_name", "interface"),
        CheckConstraint("state IN ('allocated', 'pending', 'reserved')", name="state_valid"),
        CheckConstraint("state <> 'pending' OR expires_at IS NOT NULL", name="pending_expires"),
        CheckConstraint(
            "handover IS NULL OR handover IN ('pending', 'final')", name="handover_valid"
        ),
        Index("ix_allocations_handover", "handover"),
        Index("uq_allocations_source_key", "source_key", unique=True),
        Index("ix_allocations_mac", "mac"),
        Index("ix_allocations_state_expires", "state", "expires_at"),
        Index("ix_allocations_owner", "owner_kind", "owner_name"),
    )


class Generation(Base):
    """A counter bumped in the same transaction as the changes it stands for.

    ``topology`` changes with every scope, pool or range change that can alter which pool a
    scope draws from or which MACs a pool holds (see :mod:`manager.db.generation`): a process
    that caches a namespace's scope and effective pool checks it before every use.
    """

    __tablename__ = "generations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column()


class ClusterState(Base):
    """What a plugin's reconciler knows of one cluster scope (readiness, resume points)."""

    __tablename__ = "cluster_states"

    scope_path: Mapped[str] = mapped_column(String(2048), primary_key=True)
    synced_at: Mapped[datetime | None] = mapped_column(nullable=True)
    holder: Mapped[str] = mapped_column(String(255), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target: Mapped[str] = mapped_column(String(512), default="")
    severity: Mapped[str] = mapped_column(String(16), default="info")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index("ix_audit_events_target", "target_type", "target_id"),)


class User(Base):
    """An admin UI account; the password is stored only as a salted hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role_valid"),
    )


class ApiToken(Base):
    """A bearer token for the REST API; only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(150), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role_valid"),
    )


class LoginFailure(Base):
    """A failed UI login, seen by the login throttle of every worker and replica.

    ``key`` is a keyed digest of what is throttled (a username or a client address), never the
    text itself: people type passwords into the username field. Rows older than the throttle's
    window are deleted as new failures come in.
    """

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (Index("ix_login_failures_key_failed_at", "key", "failed_at"),)


class ImportJob(Base):
    """A long import running in the background (e.g. an oVirt engine backup uploaded in the
    UI), kept here so that every worker and replica shows the same status page.

    ``id`` is a random token (it is in the status page's URL); ``owner`` is the user who
    started it, the only one who may see it. ``updated_at`` is the job's heartbeat: a running
    job whose heartbeat stopped is reported as interrupted. ``result`` holds the finished
    report, ``error`` the message of a failed job.
    """

    __tablename__ = "import_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255), default="")
    upload: Mapped[str] = mapped_column(String(64), default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(32), default="")
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="state_valid"),
    )


__all__ = [
    "Allocation",
    "ApiToken",
    "AuditEvent",
    "ClusterState",
    "HeldMac",
    "ImportJob",
    "LoginFailure",
    "Pool",
    "PoolChange",
    "PoolRange",
    "Scope",
    "User",
]
