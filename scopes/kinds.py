"""Scope kinds and which kind may sit under which."""

from __future__ import annotations

from enum import StrEnum

from manager.core.errors import InvalidScope


class ScopeKind(StrEnum):
    ENGINE = "engine"
    DATACENTER = "datacenter"
    CLUSTER = "cluster"
    NAMESPACE = "namespace"


#: A cluster may sit directly under the engine: a Kubernetes cluster outside any data center.
ALLOWED_PARENTS: dict[ScopeKind, frozenset[ScopeKind]] = {
    ScopeKind.ENGINE: frozenset(),
    ScopeKind.DATACENTER: frozenset({ScopeKind.ENGINE}),
    ScopeKind.CLUSTER: frozenset({ScopeKind.ENGINE, ScopeKind.DATACENTER}),
    ScopeKind.NAMESPACE: frozenset({ScopeKind.CLUSTER}),
}


def parse_kind(value: object) -> ScopeKind:
    """The kind named by ``value``; a clear error lists the valid kinds."""
    try:
        if isinstance(value, ScopeKind):
            return value
        return ScopeKind(str(value).lower())
    except ValueError:
        kinds = ", ".join(k.value for k in ScopeKind)
        raise InvalidScope(
            f"'{value}' is not a scope kind; use one of: {kinds}.", field="kind"
        ) from None


def check_parent(kind: ScopeKind, parent_kind: ScopeKind | None) -> None:
    """Refuse a parent the hierarchy does not allow for ``kind``."""
    if kind is ScopeKind.ENGINE:
        raise InvalidScope(
            "There is exactly one engine scope (the root, path '/'); another cannot be created.",
            field="kind",
        )
    allowed = ALLOWED_PARENTS[kind]
    if parent_kind not in allowed:
        names = " or ".join(sorted(k.value for k in allowed))
        raise InvalidScope(
            f"A {kind.value} scope must sit under a {names} scope, not under "
            f"{'nothing' if parent_kind is None else 'a ' + parent_kind.value + ' scope'}.",
            field="parent",
        )


__all__ = ["ALLOWED_PARENTS", "ScopeKind", "check_parent", "parse_kind"]
