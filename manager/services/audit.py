"""The audit log: every mutation records who did what to which object, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from manager.core.actor import Actor
from manager.db import AuditEvent
from manager.services.common import Page, check_paging

SEVERITIES = ("info", "warning")


def record_event(
    session: Session,
    actor: Actor,
    *,
    action: str,
    target_type: str,
    target_id: object = None,
    target: str = "",
    details: dict[str, Any] | None = None,
    severity: str = "info",
) -> AuditEvent:
    """Add an audit event to the current transaction (it commits or rolls back with it)."""
    event = AuditEvent(
        actor=str(actor)[:255],
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        target=target[:512],
        details=details or {},
        severity=severity,
    )
    session.add(event)
    return event


def list_events(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[AuditEvent]:
    """Audit events, newest first, filtered by any of the given fields."""
    check_paging(limit, offset)
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    if severity:
        query = query.where(AuditEvent.severity == severity)
    if since:
        query = query.where(AuditEvent.at >= since)
    if until:
        query = query.where(AuditEvent.at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    ).all()
    return Page(items=items, total=total, limit=limit, offset=offset)


__all__ = ["SEVERITIES", "list_events", "record_event"]
