"""Who does something (for the audit log) and whose NIC a MAC belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The person, token or component behind a mutation; recorded on every audit event."""

    name: str
    kind: str = "user"  # user | token | system | webhook | reconciler | importer

    def __str__(self) -> str:
        return self.name if self.kind in ("user", "system") else f"{self.kind}:{self.name}"


SYSTEM = Actor("system", "system")


@dataclass(frozen=True, slots=True)
class Owner:
    """The object whose NIC holds a MAC: ``kind`` is vm, pod, ovirt-vm, device, ..."""

    kind: str
    name: str
    uid: str | None = None


__all__ = ["SYSTEM", "Actor", "Owner"]
