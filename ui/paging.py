"""Page numbers in query strings, turned into the services' limit/offset and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from flask import request, url_for

from manager.services import Page

PAGE_SIZE = 50
#: Far beyond any real list; stops a hostile page number from overflowing the database.
MAX_PAGE = 1_000_000


def requested_page() -> int:
    """The ``page`` query argument (1-based); anything odd means page 1."""
    raw = request.args.get("page", "1")
    return min(int(raw), MAX_PAGE) if raw.isdigit() and int(raw) >= 1 else 1


class Window(TypedDict):
    limit: int
    offset: int


def window(page: int, size: int = PAGE_SIZE) -> Window:
    """The ``limit``/``offset`` keyword arguments the services take."""
    return {"limit": size, "offset": (page - 1) * size}


@dataclass(frozen=True)
class Pager:
    """Links for a paginated list, keeping the current filters."""

    page: int
    pages: int
    total: int
    endpoint: str
    args: dict[str, Any]

    @classmethod
    def of(cls, result: Page[Any], endpoint: str, **args: Any) -> Pager:
        page = result.offset // result.limit + 1
        pages = max(1, -(-result.total // result.limit))
        kept = {k: v for k, v in args.items() if v not in (None, "")}
        return cls(page=page, pages=pages, total=result.total, endpoint=endpoint, args=kept)

    def url(self, page: int) -> str:
        return url_for(self.endpoint, **self.args, page=page)


__all__ = ["PAGE_SIZE", "Pager", "requested_page", "window"]
