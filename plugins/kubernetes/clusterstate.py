"""The reconciler's persisted state per cluster scope, and the collision report built from it.

``cluster_states`` (one row per cluster scope) tells every replica and process:

- ``synced_at``: when the first full sync finished (``/readyz`` waits for it);
- ``holder``: which reconciler wrote last (the Lease holder);
- ``data["resource_versions"]``: where the watches stood;
- ``data["refused"]``: MACs the cluster's objects carry that the allocation rules would not
  register because another owner holds them (duplicates not allowed). They are real
  collisions even though the database holds only one of the owners.

:func:`collision_report` merges those with the duplicates the database does hold, giving the
numbers behind KubeMacPool's ``kubevirt_kmp_duplicate_macs`` and ``kmp_mac_collisions{mac}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from manager.core.errors import NotFound
from manager.core.mac import format_mac_int
from manager.services import ClusterState, shared_macs


@dataclass(frozen=True, slots=True)
class CollisionReport:
    """Duplicates seen in one cluster scope.

    ``collisions`` maps each shared MAC (lower-case colon form) to the sorted keys of its
    holders (``vm/<namespace>/<name>``, ``pod/<namespace>/<name>``, or ``<kind>/<scope>/<name>``
    for holders outside the cluster). ``duplicate_macs`` counts, like KubeMacPool, every
    holder beyond the first of each MAC (three objects sharing one MAC count 2).
    """

    duplicate_macs: int
    collisions: dict[str, list[str]]


def get_state(session: Session, scope_path: str, *, create: bool = False) -> ClusterState | None:
    """The state row of a cluster scope (created empty when ``create``)."""
    state = session.get(ClusterState, scope_path)
    if state is None and create:
        state = ClusterState(scope_path=scope_path, holder="", data={})
        session.add(state)
        session.flush()
    return state


def is_synced(session: Session, scope_path: str) -> bool:
    """Whether the reconciler finished its first full sync of this cluster scope."""
    state = session.get(ClusterState, scope_path)
    return state is not None and state.synced_at is not None


def record_sync(
    session: Session,
    scope_path: str,
    *,
    holder: str,
    resource_versions: Mapping[str, str],
    refused: Sequence[Mapping[str, Any]] | None = None,
    synced: bool = False,
) -> None:
    """Store the reconciler's progress (and, with ``synced``, mark the full sync done)."""
    state = get_state(session, scope_path, create=True)
    assert state is not None
    data = dict(state.data or {})
    data["resource_versions"] = dict(resource_versions)
    if refused is not None:
        data["refused"] = list(refused)
    # A new dict: the JSON column only notices assignment, not in-place changes.
    state.data = data
    state.holder = holder[:255]
    if synced:
        state.synced_at = datetime.now(UTC)


def collision_report(session: Session, *, scope_path: str) -> CollisionReport:
    """Duplicate MACs of the cluster: shared in the database, plus refused registrations."""
    holders: dict[str, set[str]] = {}
    try:
        shared = shared_macs(session, scope=scope_path)
    except NotFound:
        shared = {}
    prefix = scope_path.rstrip("/") + "/"
    for mac, rows in shared.items():
        keys = holders.setdefault(format_mac_int(mac), set())
        for row in rows:
            scope = str(row["scope"])
            where = scope[len(prefix) :] if scope.startswith(prefix) else scope
            keys.add(f"{row['owner_kind']}/{where}/{row['owner_name']}")
    state = session.get(ClusterState, scope_path)
    for entry in (state.data or {}).get("refused", []) if state else []:
        keys = holders.setdefault(str(entry["mac"]), set())
        keys.add(str(entry["owner"]))
        for holder in entry.get("holders") or []:
            if isinstance(holder, Mapping):
                scope = str(holder.get("scope", ""))
                where = scope[len(prefix) :] if scope.startswith(prefix) else scope
                keys.add(f"{holder.get('owner_kind')}/{where}/{holder.get('owner_name')}")
    collisions = {mac: sorted(keys) for mac, keys in sorted(holders.items()) if len(keys) > 1}
    duplicates = sum(len(keys) - 1 for keys in collisions.values())
    return CollisionReport(duplicate_macs=duplicates, collisions=collisions)


__all__ = ["CollisionReport", "collision_report", "get_state", "is_synced", "record_sync"]
