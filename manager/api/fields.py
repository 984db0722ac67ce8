"""Marshmallow fields of the API: a MAC address in any of its four written forms, text
without NUL characters, ids; each declares in the OpenAPI document the limits it enforces."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from apispec import BasePlugin
from marshmallow import ValidationError, fields, validate
from werkzeug.routing import IntegerConverter

from manager.core import MAC_PATTERN, InvalidMac, parse_mac
from manager.core.mac import ASSIGNABLE_MAC_PATTERN

MAC_DESCRIPTION = (
    "A MAC address: 02:00:5e:00:53:01, 02-00-5E-00-53-01, 0200.5e00.5301 or 02005e005301 "
    "(any case); answers always use the lower-case colon form."
)
ASSIGNABLE_MAC_DESCRIPTION = (
    MAC_DESCRIPTION + " Multicast MACs (odd first octet) and 00:00:00:00:00:00 are refused."
)
#: Text without NUL characters.
NO_NUL_PATTERN = r"^[^\x00]*$"


#: The largest id the databases store (BIGINT); larger numbers cannot name anything.
MAX_ID = 2**63 - 1


class Text(fields.String):
    """A string without NUL characters (PostgreSQL cannot store them; no name needs them).

    The OpenAPI document says so with a pattern, unless a ``Regexp`` validator of the field
    gives its own (which must then exclude NUL too).
    """

    def __init__(self, **kwargs: Any) -> None:
        validators = kwargs.get("validate") or []
        validators = validators if isinstance(validators, list | tuple) else [validators]
        if not any(isinstance(v, validate.Regexp) for v in validators):
            kwargs["metadata"] = {"pattern": NO_NUL_PATTERN, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

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

    PATTERN = MAC_PATTERN
    DESCRIPTION = MAC_DESCRIPTION

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": self.PATTERN, "description": self.DESCRIPTION}
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


class AssignableMac(Mac):
    """A MAC that may be handed out or bound to a NIC (a requested MAC, a range's bounds).

    The services refuse the others with the reason; the pattern tells clients beforehand.
    """

    PATTERN = ASSIGNABLE_MAC_PATTERN
    DESCRIPTION = ASSIGNABLE_MAC_DESCRIPTION


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time; without an offset it is taken as UTC, and it loads in UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        return super()._deserialize(value, attr, data, **kwargs).astimezone(UTC)


__all__ = ["MAC_DESCRIPTION", "MAX_ID", "Id", "IdConverter", "Mac", "Text", "UtcDateTime"]


class ExclusiveFieldsPlugin(BasePlugin):
    """Documents a schema's ``EXCLUSIVE`` field groups: a request may give at most one of each.

    (``parent`` or ``parent_id``; ``scope`` or ``scope_id``.) OpenAPI 3.0 says so with
    ``not: {anyOf: [{required: [a, b]}]}``.
    """

    def schema_helper(
        self, name: str, definition: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any] | None:
        schema = kwargs.get("schema")
        groups = getattr(schema if isinstance(schema, type) else type(schema), "EXCLUSIVE", ())
        if not groups:
            return None
        return {"not": {"anyOf": [{"required": list(group)} for group in groups]}}
