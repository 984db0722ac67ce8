"""Marshmallow fields of the API: a MAC address in any of its four written forms."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate
from werkzeug.routing import IntegerConverter

from manager.core import MAC_PATTERN, InvalidMac, parse_mac

MAC_DESCRIPTION = (
    "A MAC address: 02:00:5e:00:53:01, 02-00-5E-00-53-01, 0200.5e00.5301 or 02005e005301 "
    "(any case); answers always use the lower-case colon form."
)


#: The largest id the databases store (BIGINT); larger numbers cannot name anything.
MAX_ID = 2**63 - 1


class Text(fields.String):
    """A string without NUL characters (PostgreSQL cannot store them; no name needs them)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Text must not contain NUL characters.")
        return text


class Id(fields.Integer):
    """A database id: a whole number from 1 to 2^63-1."""

    def __init__(self, *, strict: bool = True, **kwargs: Any) -> None:
        # JSON bodies must carry numbers; query strings can only carry text.
        super().__init__(strict=strict, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class IdConverter(IntegerConverter):
    """``<id:name>`` in a URL: an id within the database's range (else the route is a 404)."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, min=1, max=MAX_ID)


class Mac(fields.String):
    """A MAC address loaded into its lower-case colon form; the pattern is in the OpenAPI."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": MAC_PATTERN, "description": MAC_DESCRIPTION}
        metadata.update(kwargs.pop("metadata", {}))
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return str(parse_mac(text))
        except InvalidMac as exc:
            raise ValidationError(exc.message) from None


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time; without an offset it is taken as UTC, and it loads in UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        return super()._deserialize(value, attr, data, **kwargs).astimezone(UTC)


__all__ = ["MAC_DESCRIPTION", "MAX_ID", "Id", "IdConverter", "Mac", "Text", "UtcDateTime"]
