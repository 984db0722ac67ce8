"""The narrow interface between the admission logic and MacPool's allocation services.

The admission functions never touch the database: they describe what an object needs and a
:class:`MacBroker` does it. The integrator implements the broker over ``manager.services`` (one
transaction per admission review); tests use an in-memory fake. Keeping the protocol this small
means the webhook logic can be tested without a database and cannot bypass a service rule.

Owner identity follows DESIGN §3: (namespace scope, owner kind, owner name, interface).
Owner kinds are ``"vm"`` for VirtualMachines and ``"pod"`` for Pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

#: Owner kind of a KubeVirt VirtualMachine.
OWNER_VM: Final = "vm"
#: Owner kind of a Pod with Multus networks.
OWNER_POD: Final = "pod"


@dataclass(frozen=True)
class MigrationLabels:
    """Label keys by which a migrated VM names the VM it was copied from (Forklift's)."""

    vm_id: str = "vmID"
    plan: str = "plan"
    migration: str = "migration"

    @classmethod
    def parse(cls, text: str) -> MigrationLabels:
        """``VMID,PLAN,MIGRATION`` label keys, as ``MACPOOL_K8S_MIGRATION_LABELS`` gives them."""
        keys = [key.strip() for key in text.split(",")]
        if len(keys) != 3 or not all(keys):
            raise ValueError(
                f"'{text}' is not three label keys VMID,PLAN,MIGRATION (e.g. vmID,plan,migration)"
            )
        return cls(*keys)


FORKLIFT_LABELS: Final = MigrationLabels()


@dataclass(frozen=True)
class MigrationSource:
    """The VM an object says it was migrated from: its id (oVirt VM id or KubeVirt UID)."""

    vm_id: str
    plan: str | None = None
    migration: str | None = None


def migration_source(
    metadata: Mapping[str, Any], labels: MigrationLabels
) -> MigrationSource | None:
    """The VM this object says it was migrated from (its ``vmID`` label), if any."""
    values = metadata.get("labels")
    if not isinstance(values, Mapping):
        return None
    vm_id = values.get(labels.vm_id)
    if not isinstance(vm_id, str) or not vm_id:
        return None

    def label(key: str) -> str | None:
        value = values.get(key)
        return value if isinstance(value, str) and value else None

    return MigrationSource(vm_id, plan=label(labels.plan), migration=label(labels.migration))


@dataclass(frozen=True)
class Owner:
    """The object that holds MACs: a VM or a Pod in one namespace.

    ``name`` may be a placeholder for objects created with ``generateName`` (their name is not
    known at admission time); see :func:`plugins.kubernetes.admission.owner_of`.
    """

    namespace: str
    kind: str
    name: str
    uid: str | None = None
    #: Set when the object is the migrated copy of another VM: it may take that VM's MACs.
    migrated_from: MigrationSource | None = None


@dataclass(frozen=True)
class NicClaim:
    """What one interface of an owner must hold after the review.

    ``mac`` is the wanted MAC in any accepted notation, or ``None`` for "whatever it holds now,
    else the next free MAC of the namespace's effective pool".
    """

    interface: str
    mac: str | None = None


class MacBroker(Protocol):
    """Allocation operations the webhook needs, implemented over the service layer.

    Errors are the families of :mod:`manager.core.errors`; the admission layer turns them into
    refusals. The keys it reads from ``details`` are:

    - :class:`~manager.core.errors.MacInUse`: ``mac`` (str), ``pool`` (name of the requester's
      effective pool), ``holders`` (list of dicts with ``owner_kind``, ``owner_name``,
      ``interface``, ``scope`` (path) and ``pool``; plain strings are accepted too);
    - :class:`~manager.core.errors.PoolExhausted`: ``pool`` (name);
    - :class:`~manager.core.errors.InvalidMac`: ``value``.
    Missing keys only make the message less specific.
    """

    def held_macs(self, owner: Owner) -> dict[str, str]:
        """Interface name → MAC (lower-case colon form) of every allocation the owner holds."""
        ...

    def claim(
        self,
        owner: Owner,
        claims: Sequence[NicClaim],
        *,
        transaction: str | None,
        dry_run: bool,
    ) -> dict[str, str]:
        """Make each claimed interface hold its MAC; return interface → MAC for every claim.

        All-or-nothing: on any error nothing is stored. Rules, per claim:

        - the interface already holds the requested MAC, or ``mac`` is ``None`` and it holds
          one: that allocation is returned unchanged (webhook retries never burn MACs);
        - ``mac`` is ``None`` and nothing is held: the next free MAC, distinct from every other
          MAC returned by this call (this matters for ``dry_run``, where nothing is stored);
        - the interface holds a different MAC: it moves to the requested one (the old MAC is
          released in the same unit of work);
        - a requested MAC held by another owner is refused with ``MacInUse`` unless duplicates
          are allowed by every pool involved, or the holder is the VM named by the owner's
          ``migrated_from``: then the MAC is handed over to the owner (a migration).

        New allocations are ``pending``; ``transaction`` is the object's
        ``kubemacpool.io/transaction-timestamp`` to store with them (``None`` for pods), so the
        reconciler can confirm them once the persisted object carries a stamp at least as new.
        ``dry_run`` computes the same answer and stores nothing.
        """
        ...

    def release(self, owner: Owner, interfaces: Sequence[str], *, dry_run: bool) -> None:
        """Release the owner's allocations on these interfaces (unknown ones are ignored).

        Only this owner's hold is removed: a MAC shared with duplicates stays held by the others.
        """
        ...


def holders_text(holders: object) -> str:
    """Human text for the ``holders`` detail of a ``MacInUse`` error (see :class:`MacBroker`)."""
    if not isinstance(holders, list | tuple) or not holders:
        return "another owner"
    parts = [_holder_text(holder) for holder in holders]
    return ", ".join(parts)


def _holder_text(holder: object) -> str:
    if not isinstance(holder, Mapping):
        return str(holder)
    kind = holder.get("owner_kind", "?")
    name = holder.get("owner_name", "?")
    extras = []
    if holder.get("interface"):
        extras.append(f"interface {holder['interface']}")
    if holder.get("scope"):
        extras.append(f"scope {holder['scope']}")
    if holder.get("pool"):
        extras.append(f"pool '{holder['pool']}'")
    suffix = f" ({', '.join(extras)})" if extras else ""
    return f"{kind} {name}{suffix}"


__all__ = ["OWNER_POD", "OWNER_VM", "MacBroker", "NicClaim", "Owner", "holders_text"]
