"""Form plumbing: typed values kept on error, domain errors placed next to their field."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from flask import request

from manager.core.errors import InvalidInput, MacPoolError, RangeOverlap
from manager.services import coerce_range

#: Domain field names that the UI's forms call differently.
FIELD_ALIASES = {"pool_id": "pool", "start": "ranges", "end": "ranges", "scope_id": "scope"}
#: Where an error that names no field belongs: a bad MAC is about the form's MAC field.
FIELD_BY_REASON = {"invalid_mac": "mac"}
FORM = "_form"
MAX_TEXT = 2048


@dataclass
class FormState:
    """What the user typed and what was wrong with it, per field (``_form`` for the rest)."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def error(self, name: str) -> str:
        return self.errors.get(name, "")


def text_field(name: str, default: str = "") -> str:
    """A trimmed text value from the submitted form, bounded so it cannot blow up a page."""
    return request.form.get(name, default).strip()[:MAX_TEXT]


def checkbox(name: str) -> bool:
    return request.form.get(name) in ("on", "true", "1", "yes")


def place_error(exc: MacPoolError, fields: Collection[str]) -> dict[str, str]:
    """Put the domain error's message next to the field it names (or above the form)."""
    name = exc.field or FIELD_BY_REASON.get(exc.reason, "")
    name = FIELD_ALIASES.get(name, name)
    return {name if name in fields else FORM: exc.message}


@dataclass
class RangeRow:
    """One start/end pair of the pool form."""

    start: str = ""
    end: str = ""
    error: str = ""

    @property
    def blank(self) -> bool:
        return not self.start and not self.end


def range_rows() -> list[RangeRow]:
    """The submitted range rows (``range_start``/``range_end`` repeated, in order)."""
    starts = request.form.getlist("range_start")
    ends = request.form.getlist("range_end")
    count = max(len(starts), len(ends))
    starts += [""] * (count - len(starts))
    ends += [""] * (count - len(ends))
    return [RangeRow(s.strip()[:64], e.strip()[:64]) for s, e in zip(starts, ends, strict=True)]


def range_inputs(rows: list[RangeRow]) -> list[tuple[str, str]]:
    """The rows a user filled in; entirely blank rows are spare rows, not ranges."""
    return [(row.start, row.end) for row in rows if not row.blank]


def mark_range_rows(rows: list[RangeRow], exc: MacPoolError) -> None:
    """Say on each row what is wrong with it: a bad bound, or the range it overlaps."""
    parsed: dict[int, str] = {}
    for i, row in enumerate(rows):
        if row.blank:
            continue
        try:
            parsed[i] = str(coerce_range((row.start, row.end)))
        except InvalidInput as bad:
            row.error = bad.message
    if not isinstance(exc, RangeOverlap):
        return
    for i, text in parsed.items():
        notes = []
        for conflict in exc.details.get("conflicts", []):
            if conflict.get("range") == text and "pool" in conflict:
                notes.append(f"overlaps pool '{conflict['pool']}' range {conflict['pool_range']}")
            elif conflict.get("range") == text and "overlaps" in conflict:
                notes.append(f"overlaps range {conflict['overlaps']} of this form")
            elif conflict.get("overlaps") == text:
                notes.append(f"overlaps range {conflict['range']} of this form")
        if notes:
            rows[i].error = "This range " + "; ".join(notes) + "."


__all__ = [
    "FORM",
    "FormState",
    "RangeRow",
    "checkbox",
    "mark_range_rows",
    "place_error",
    "range_inputs",
    "range_rows",
    "text_field",
]
