"""The one table that turns MacPool's errors into answers, for every channel.

The REST API answers with the status as its HTTP status, the admin UI renders an error page
with it, and the admission webhook puts it in ``status.code`` of its refusal: all three read
:func:`answer_for`, so a family answers the same everywhere. The error tree itself
(``manager.core.errors``) knows no status codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from manager.core.errors import Conflict, DatabaseUnavailable, InvalidInput, MacPoolError, NotFound

#: Seconds a client is asked to wait (``Retry-After``) before trying again after an outage.
RETRY_AFTER_SECONDS = 5

#: Each family's status; a leaf answers with its nearest family's.
STATUS_BY_FAMILY: dict[type[Exception], int] = {
    NotFound: 404,
    InvalidInput: 422,
    Conflict: 409,
    DatabaseUnavailable: 503,
}

#: The status of a MacPoolError outside every family (none is raised on purpose: a bug).
UNCLASSIFIED_STATUS = 500

#: The ``Retry-After`` of families worth retrying unchanged.
RETRY_AFTER_BY_FAMILY: dict[type[Exception], int] = {DatabaseUnavailable: RETRY_AFTER_SECONDS}

#: The errors the table answers for.
AnsweredError = MacPoolError | DatabaseUnavailable


@dataclass(frozen=True)
class ErrorAnswer:
    """What a channel tells its client about an error."""

    status: int
    reason: str
    message: str
    #: Seconds to wait before retrying, when retrying unchanged can succeed.
    retry_after: int | None = None
    #: The input field concerned and machine-readable details (domain errors only).
    input_field: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _family_value(error: Exception, table: dict[type[Exception], int]) -> int | None:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return None


def status_of(error: AnsweredError) -> int:
    """The status of an error: its nearest family's (500 for a bare MacPoolError)."""
    status = _family_value(error, STATUS_BY_FAMILY)
    return UNCLASSIFIED_STATUS if status is None else status


def answer_for(error: AnsweredError) -> ErrorAnswer:
    """Status, reason, message and retry advice of an error, the same for every channel."""
    if isinstance(error, MacPoolError):
        return ErrorAnswer(
            status=status_of(error),
            reason=error.reason,
            message=error.message,
            retry_after=_family_value(error, RETRY_AFTER_BY_FAMILY),
            input_field=error.field,
            details=dict(error.details),
        )
    return ErrorAnswer(
        status=status_of(error),
        reason=error.reason,
        message=error.message,
        retry_after=_family_value(error, RETRY_AFTER_BY_FAMILY),
    )


__all__ = [
    "RETRY_AFTER_SECONDS",
    "STATUS_BY_FAMILY",
    "AnsweredError",
    "ErrorAnswer",
    "answer_for",
    "status_of",
]
