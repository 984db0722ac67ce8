"""The one exception tree of MacPool.

Three families, no HTTP codes: each channel (REST API, admin UI, admission webhook, CLI,
importer) maps the families to its own answers in exactly one place.

    MacPoolError
    ├── NotFound                      reason not_found
    ├── InvalidInput                  reason invalid_input
    │   ├── InvalidMac                reason invalid_mac
    │   ├── InvalidRange              reason invalid_range
    │   └── InvalidScope              reason invalid_scope
    └── Conflict                      reason conflict
        ├── NameInUse                 reason name_in_use
        ├── RangeOverlap              reason range_overlap
        ├── MacInUse                  reason mac_in_use
        ├── InterfaceInUse            reason interface_in_use
        ├── PoolExhausted             reason pool_exhausted
        ├── DuplicatesExist           reason duplicates_exist
        ├── PoolInUse                 reason pool_in_use
        ├── ScopeNotEmpty             reason scope_not_empty
        └── InvalidState              reason invalid_state

    DatabaseUnavailable               reason database_unavailable

``DatabaseUnavailable`` stands outside ``MacPoolError`` on purpose: an outage says nothing about
the request, so no handler of refusals (``except MacPoolError``) may take it for one; each
channel answers it as "try again later" from the same table as the families.
"""

from __future__ import annotations

from typing import Any


class MacPoolError(Exception):
    """Base of every error MacPool raises on purpose.

    ``message`` is a sentence a person can act on; ``field`` names the input field the error
    concerns (UI forms show it next to that field); ``details`` carries machine-readable data.
    """

    reason = "error"

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class NotFound(MacPoolError):
    """The thing named does not exist."""

    reason = "not_found"


class InvalidInput(MacPoolError):
    """The input cannot be accepted as it is."""

    reason = "invalid_input"


class InvalidMac(InvalidInput):
    """A value is not an acceptable MAC address."""

    reason = "invalid_mac"


class InvalidRange(InvalidInput):
    """A range's bounds are not acceptable."""

    reason = "invalid_range"


class InvalidScope(InvalidInput):
    """A scope name, kind, parent or path is not acceptable."""

    reason = "invalid_scope"


class Conflict(MacPoolError):
    """The request is well formed but conflicts with what is stored."""

    reason = "conflict"


class NameInUse(Conflict):
    reason = "name_in_use"


class RangeOverlap(Conflict):
    reason = "range_overlap"


class MacInUse(Conflict):
    reason = "mac_in_use"


class InterfaceInUse(Conflict):
    """The owner's interface already holds another MAC."""

    reason = "interface_in_use"


class PoolExhausted(Conflict):
    reason = "pool_exhausted"


class OutsidePool(Conflict):
    """A requested MAC lies outside the ranges of the pool the request must take it from."""

    reason = "outside_pool"


class DuplicatesExist(Conflict):
    reason = "duplicates_exist"


class PoolInUse(Conflict):
    reason = "pool_in_use"


class ScopeNotEmpty(Conflict):
    reason = "scope_not_empty"


class InvalidState(Conflict):
    """The object is not in a state that allows the operation (e.g. confirming a reserved MAC)."""

    reason = "invalid_state"


class DatabaseUnavailable(Exception):
    """The database cannot be reached or does not answer in time (down, hung, locked).

    Raised by ``manager.db`` in place of the driver's connection, timeout and disconnect
    errors; the request can be retried once the database is back, without a restart.
    """

    reason = "database_unavailable"
    message = "MacPool cannot reach its database right now; nothing was changed. Try again shortly."

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.message)
        #: The driver's own words, for the log only (may name hosts and ports).
        self.detail = detail


__all__ = [
    "Conflict",
    "DatabaseUnavailable",
    "DuplicatesExist",
    "InterfaceInUse",
    "InvalidInput",
    "InvalidMac",
    "InvalidRange",
    "InvalidScope",
    "InvalidState",
    "MacInUse",
    "MacPoolError",
    "NameInUse",
    "NotFound",
    "OutsidePool",
    "PoolExhausted",
    "PoolInUse",
    "RangeOverlap",
    "ScopeNotEmpty",
]
