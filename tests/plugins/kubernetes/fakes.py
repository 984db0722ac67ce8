"""An in-memory MacBroker that enforces system-wide uniqueness, for the admission tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from manager.core import MacInUse, PoolExhausted, format_mac_int, parse_assignable_mac
from plugins.kubernetes.broker import NicClaim, Owner


@dataclass
class Held:
    mac: int
    transaction: str | None
    state: str = "pending"


@dataclass
class FakeBroker:
    """One pool ``[start, end]``; allocations keyed by (namespace, kind, name, interface)."""

    start: int = 0x02_00_00_00_00_10
    end: int = 0x02_00_00_00_00_1F
    pool: str = "default"
    allow_duplicates: bool = False
    cursor: int | None = None
    store: dict[tuple[str, str, str, str], Held] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    # -- protocol ---------------------------------------------------------------------------

    def held_macs(self, owner: Owner) -> dict[str, str]:
        self.calls.append("held_macs")
        return {
            key[3]: format_mac_int(held.mac)
            for key, held in self.store.items()
            if key[:3] == (owner.namespace, owner.kind, owner.name)
        }

    def claim(
        self,
        owner: Owner,
        claims: Sequence[NicClaim],
        *,
        transaction: str | None,
        dry_run: bool,
    ) -> dict[str, str]:
        self.calls.append(f"claim(dry_run={dry_run})")
        staged = dict(self.store)
        cursor = self.cursor
        result: dict[str, str] = {}
        taken: set[int] = set()
        for claim in claims:
            key = (owner.namespace, owner.kind, owner.name, claim.interface)
            current = staged.get(key)
            if claim.mac is None:
                if current is not None:
                    value = current.mac
                else:
                    value, cursor = self._next_free(staged, taken, cursor)
                    staged[key] = Held(value, transaction)
            else:
                value = int(parse_assignable_mac(claim.mac))
                if current is None or current.mac != value:
                    others = [k for k, h in staged.items() if h.mac == value and k != key]
                    if others and not self.allow_duplicates:
                        raise MacInUse(
                            f"{format_mac_int(value)} is in use",
                            details={
                                "mac": format_mac_int(value),
                                "pool": self.pool,
                                "holders": [
                                    {
                                        "owner_kind": k[1],
                                        "owner_name": k[2],
                                        "interface": k[3],
                                        "scope": f"/kubernetes/{k[0]}",
                                        "pool": self.pool,
                                    }
                                    for k in others
                                ],
                            },
                        )
                    staged[key] = Held(value, transaction)
            taken.add(value)
            result[claim.interface] = format_mac_int(value)
        if not dry_run:
            self.store = staged
            self.cursor = cursor
        return result

    def release(self, owner: Owner, interfaces: Sequence[str], *, dry_run: bool) -> None:
        self.calls.append(f"release(dry_run={dry_run})")
        if dry_run:
            return
        for interface in interfaces:
            self.store.pop((owner.namespace, owner.kind, owner.name, interface), None)

    # -- helpers ----------------------------------------------------------------------------

    def _next_free(
        self, staged: dict[tuple[str, str, str, str], Held], taken: set[int], cursor: int | None
    ) -> tuple[int, int]:
        held = {h.mac for h in staged.values()} | taken
        start = self.start if cursor is None else cursor
        size = self.end - self.start + 1
        for step in range(size):
            value = self.start + (start - self.start + step) % size
            if value not in held:
                return value, value + 1 if value < self.end else self.start
        raise PoolExhausted("the pool is exhausted", details={"pool": self.pool})

    def macs(self) -> list[str]:
        return sorted(format_mac_int(h.mac) for h in self.store.values())

    def hold(self, namespace: str, kind: str, name: str, interface: str, mac: str) -> None:
        self.store[(namespace, kind, name, interface)] = Held(
            int(parse_assignable_mac(mac)), None, "allocated"
        )
