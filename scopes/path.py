"""Scope names and paths: ``/`` is the engine, ``/dc1/ocp-east/team-a`` a namespace."""

from __future__ import annotations

from manager.core.errors import InvalidScope

ROOT_PATH = "/"
MAX_NAME_LENGTH = 253  # a DNS subdomain, the longest Kubernetes object name


def validate_scope_name(name: object) -> str:
    """A scope name: 1–253 printable characters, no ``/``, no surrounding white space."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidScope("A scope name must be a non-empty string.", field="name")
    if name != name.strip():
        raise InvalidScope(
            f"Scope name '{name}' has leading or trailing white space.", field="name"
        )
    if "/" in name:
        raise InvalidScope(
            f"Scope name '{name}' contains '/', which separates the parts of a path.",
            field="name",
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidScope(
            f"Scope name '{name[:40]}…' is {len(name)} characters long; at most "
            f"{MAX_NAME_LENGTH} are allowed.",
            field="name",
        )
    if not name.isprintable():
        raise InvalidScope(f"Scope name {name!r} contains control characters.", field="name")
    return name


def split_path(path: object) -> list[str]:
    """The names along a path, root first; ``/`` gives an empty list."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidScope(
            f"'{path}' is not a scope path: a path starts with '/', e.g. /dc1/cluster1.",
            field="path",
        )
    if path == ROOT_PATH:
        return []
    parts = path.rstrip("/").split("/")[1:] if path != "/" else []
    for part in parts:
        validate_scope_name(part)
    return parts


def child_path(parent_path: str, name: str) -> str:
    return f"/{name}" if parent_path == ROOT_PATH else f"{parent_path}/{name}"


def ancestor_paths(path: str) -> list[str]:
    """The path itself and every ancestor's, nearest first, ending with ``/``."""
    parts = split_path(path)
    paths = ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return [*paths, ROOT_PATH]


__all__ = ["ROOT_PATH", "ancestor_paths", "child_path", "split_path", "validate_scope_name"]
