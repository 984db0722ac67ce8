"""Use cases of MacPool. Every channel (API, UI, webhook, importer, CLI) calls these.

Each function takes a SQLAlchemy session and, for mutations, an :class:`~manager.core.Actor`;
none commits: the caller (request, command, reconciler step) owns the transaction.
"""

from manager.core.actor import SYSTEM, Actor, Owner
from manager.services.allocation_rows import AllocationRequest, Handover
from manager.services.allocations import (
    AllocationResult,
    MacInfo,
    allocate_mac,
    confirm_allocation,
    expire_pending,
    find_allocations,
    get_allocation,
    list_duplicates,
    mac_info,
    release_allocation,
    release_owner,
)
from manager.services.audit import list_events, record_event
from manager.services.bootstrap import bootstrap
from manager.services.common import Page
from manager.services.forecast import Forecast, Planned, Prior, StalePlan, read_snapshot
from manager.services.handovers import complete_handovers, describe_source, pending_handovers
from manager.services.jobs import (
    finish_job,
    get_job,
    is_interrupted,
    record_progress,
    start_job,
)
from manager.services.pools import (
    PoolStats,
    add_range,
    create_pool,
    delete_pool,
    ensure_default_pool,
    find_pool_by_name,
    get_default_pool,
    get_pool,
    list_pools,
    planned_pool,
    pool_statistics,
    remove_range,
    update_pool,
)
from manager.services.scopes import (
    ResolvedPool,
    assign_pool,
    create_scope,
    delete_scope,
    ensure_path,
    ensure_scope,
    get_scope,
    list_scopes,
    move_scope,
    planned_scope,
    resolve_pool,
    update_scope,
)

__all__ = [
    "SYSTEM",
    "Actor",
    "AllocationRequest",
    "AllocationResult",
    "Forecast",
    "Handover",
    "MacInfo",
    "Owner",
    "Page",
    "Planned",
    "PoolStats",
    "Prior",
    "ResolvedPool",
    "StalePlan",
    "add_range",
    "allocate_mac",
    "assign_pool",
    "bootstrap",
    "complete_handovers",
    "confirm_allocation",
    "create_pool",
    "create_scope",
    "delete_pool",
    "delete_scope",
    "describe_source",
    "ensure_default_pool",
    "ensure_path",
    "ensure_scope",
    "expire_pending",
    "find_allocations",
    "find_pool_by_name",
    "finish_job",
    "get_allocation",
    "get_default_pool",
    "get_job",
    "get_pool",
    "get_scope",
    "is_interrupted",
    "list_duplicates",
    "list_events",
    "list_pools",
    "list_scopes",
    "mac_info",
    "move_scope",
    "pending_handovers",
    "planned_pool",
    "planned_scope",
    "pool_statistics",
    "read_snapshot",
    "record_event",
    "record_progress",
    "release_allocation",
    "release_owner",
    "remove_range",
    "resolve_pool",
    "start_job",
    "update_pool",
    "update_scope",
]
