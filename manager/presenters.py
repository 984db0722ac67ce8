"""Plain-data views of stored objects, shared by the CLI and JSON answers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from manager.core.mac import format_mac_int
from manager.core.ranges import unicast_count
from manager.db import Allocation, Pool, Scope
from manager.services import describe_source, pool_statistics, resolve_pool


def pool_data(session: Session, pool: Pool) -> dict[str, Any]:
    stats = pool_statistics(session, pool)
    return {
        "id": pool.id,
        "name": pool.name,
        "description": pool.description,
        "allow_duplicates": pool.allow_duplicates,
        "is_default": pool.is_default,
        "ranges": [
            {
                "id": r.id,
                "start": format_mac_int(r.start_mac),
                "end": format_mac_int(r.end_mac),
                "size": unicast_count(r.start_mac, r.end_mac),
            }
            for r in pool.ranges
        ],
        "statistics": {
            "size": stats.size,
            "allocated": stats.allocated,
            "available": stats.available,
            "external": stats.external,
            "duplicates": stats.duplicates,
        },
    }


def scope_data(session: Session, scope: Scope) -> dict[str, Any]:
    resolved = resolve_pool(session, scope)
    return {
        "id": scope.id,
        "kind": scope.kind,
        "name": scope.name,
        "path": scope.path,
        "parent_id": scope.parent_id,
        "pool_id": scope.pool_id,
        "effective_pool_id": resolved.pool.id,
        "effective_pool": resolved.pool.name,
        "inherited_from": resolved.source.path if resolved.inherited else None,
        "description": scope.description,
    }


def allocation_data(allocation: Allocation) -> dict[str, Any]:
    return {
        "id": allocation.id,
        "mac": format_mac_int(allocation.mac),
        "state": allocation.state,
        "scope_id": allocation.scope_id,
        "scope": allocation.scope.path,
        "pool_id": allocation.pool_id,
        "pool": allocation.pool.name,
        "owner": {
            "kind": allocation.owner_kind,
            "name": allocation.owner_name,
            "uid": allocation.owner_uid,
        },
        "interface": allocation.interface,
        "in_range": allocation.in_range,
        "expires_at": allocation.expires_at.isoformat() if allocation.expires_at else None,
        "created_at": allocation.created_at.isoformat() if allocation.created_at else None,
        "origin": allocation.created_by,
        "handover": allocation.handover,
        "source": describe_source(allocation),
    }


__all__ = ["allocation_data", "pool_data", "scope_data"]
