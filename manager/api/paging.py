"""Page windows for list endpoints: flask-smorest's ``page``/``page_size`` to limit/offset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
#: The largest page a caller may ask for (webargs answers 422 above it).
MAX_PAGE_SIZE = 500

#: Arguments of every ``@blp.paginate(...)`` of the API.
PAGINATE = {"page_size": DEFAULT_PAGE_SIZE, "max_page_size": MAX_PAGE_SIZE}


#: Offsets beyond this address nothing (and would overflow the databases' integers).
MAX_OFFSET = 2**62


def window(pagination: Any) -> tuple[int, int]:
    """(limit, offset) of the requested page; a page far beyond the end is simply empty."""
    return int(pagination.page_size), min(int(pagination.first_item), MAX_OFFSET)


def set_total(pagination: Any, total: int) -> None:
    """Tell flask-smorest the item count, so it can write the X-Pagination header."""
    pagination.item_count = total


def page_of(items: Sequence[T], pagination: Any) -> list[T]:
    """The requested page of an already ordered, complete list (for short lists)."""
    limit, offset = window(pagination)
    set_total(pagination, len(items))
    return list(items[offset : offset + limit])


__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PAGINATE", "page_of", "set_total", "window"]
