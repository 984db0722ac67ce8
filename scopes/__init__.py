"""The scope hierarchy: engine → data center → cluster → namespace.

Pure domain rules (kinds, allowed parents, names and paths, effective-pool resolution); no
framework imports (enforced by import-linter).
"""

from scopes.kinds import ALLOWED_PARENTS, ScopeKind, check_parent
from scopes.path import ROOT_PATH, ancestor_paths, child_path, split_path, validate_scope_name
from scopes.resolution import EffectivePool, resolve_effective_pool

__all__ = [
    "ALLOWED_PARENTS",
    "ROOT_PATH",
    "EffectivePool",
    "ScopeKind",
    "ancestor_paths",
    "check_parent",
    "child_path",
    "resolve_effective_pool",
    "split_path",
    "validate_scope_name",
]
