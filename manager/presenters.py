"""Plain-data views of stored objects, shared by the CLI and JSON answers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from manager.core.errors import InvalidInput
from manager.core.mac import format_mac_int
from manager.core.ranges import unicast_count
from manager.db import Allocation, Pool, Scope
from manager.services import describe_source, pool_statistics, resolve_pool
from manager.services.migration_check import MigrationCheck, SourceNic, SourceVm


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


def migration_check_data(check: MigrationCheck) -> dict[str, Any]:
    """A migration check as the API returns it and the CLI prints it with ``--json``."""
    return {
        "passes": check.passes,
        "scope": check.scope,
        "pool": check.pool,
        "counts": check.counts(),
        "nics": [
            {
                "vm_id": n.vm_id,
                "vm_name": n.vm_name,
                "nic": n.nic,
                "mac": n.mac,
                "status": n.status,
                "holders": n.holders,
                "message": n.message,
            }
            for n in check.nics
        ],
    }


def source_vms(data: object) -> list[SourceVm]:
    """Source VMs from decoded JSON: ``{"vms": [...]}`` or the list itself, each
    ``{"id", "name", "nics": [{"name", "mac"}]}``; :class:`InvalidInput` names what is wrong."""
    vms = data.get("vms") if isinstance(data, dict) else data
    if not isinstance(vms, list):
        raise InvalidInput('Give the source VMs as {"vms": [...]} or a JSON list.', field="vms")
    found = []
    for i, vm in enumerate(vms):
        nics = vm.get("nics") if isinstance(vm, dict) else None
        if not isinstance(vm, dict) or not isinstance(nics, list):
            raise InvalidInput(f"VM {i}: give id, name and nics (a list).", field="vms")
        try:
            found.append(
                SourceVm(
                    id=_text(vm["id"]),
                    name=_text(vm["name"]),
                    nics=[SourceNic(name=_text(n["name"]), mac=_text(n["mac"])) for n in nics],
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"VM {i} ({str(vm.get('name'))[:60]}): every VM needs id and name and every NIC "
                "name and mac, as strings.",
                field="vms",
            ) from exc
    return found


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(value)
    return value


__all__ = ["allocation_data", "migration_check_data", "pool_data", "scope_data", "source_vms"]
