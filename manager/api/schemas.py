"""Marshmallow schemas of the API, named ``<Thing><Role>Schema``.

Request bodies refuse unknown keys (``RAISE``, marshmallow's default) so that a typo is a 422,
not a silently ignored setting. ``EXCLUSIVE`` names fields a request may not give together (the
document says so with ``not: required``, see :class:`~manager.api.fields.ExclusiveFieldsPlugin`). Response schemas describe the dicts of ``manager.presenters``.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from manager.api.fields import AssignableMac, Id, Mac, Text, UtcDateTime
from manager.api_support import ErrorSchema
from manager.services.allocations import MAX_TTL_SECONDS, STATES
from manager.services.handovers import HANDOVER_STATES

NAME = validate.Length(min=1, max=255)
#: A scope path: absolute, like /dc1/c1 (a bare number would be taken for an id).
PATH = [
    validate.Length(min=1, max=2048),
    # NUL is refused by Text first, with its own message; the pattern documents both rules.
    validate.Regexp(r"^/[^\x00]*$", error="A scope path starts with '/', e.g. /dc1/c1."),
]


# --- pools -------------------------------------------------------------------------------


class RangeSchema(Schema):
    """One inclusive range of MAC addresses."""

    error_messages = {"type": 'A range is an object: {"start": "<MAC>", "end": "<MAC>"}.'}

    id = fields.Integer(dump_only=True)
    start = AssignableMac(required=True)
    end = AssignableMac(required=True)
    size = fields.Integer(dump_only=True, metadata={"description": "Unicast addresses in it"})


class PoolStatisticsSchema(Schema):
    size = fields.Integer(required=True)
    allocated = fields.Integer(required=True)
    available = fields.Integer(required=True)
    external = fields.Integer(
        required=True, metadata={"description": "Held MACs of the pool outside its ranges"}
    )
    duplicates = fields.Integer(required=True)


class PoolSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    allow_duplicates = fields.Boolean(required=True)
    is_default = fields.Boolean(required=True)
    ranges = fields.List(fields.Nested(RangeSchema), required=True)
    statistics = fields.Nested(PoolStatisticsSchema, required=True)


class PoolCreateSchema(Schema):
    name = Text(required=True, validate=NAME)
    description = Text(load_default="", validate=validate.Length(max=4096))
    allow_duplicates = fields.Boolean(load_default=False)
    ranges = fields.List(
        fields.Nested(RangeSchema), required=True, validate=validate.Length(min=1, max=1000)
    )


class PoolUpdateSchema(Schema):
    name = Text(validate=NAME)
    description = Text(validate=validate.Length(max=4096))
    allow_duplicates = fields.Boolean()
    ranges = fields.List(
        fields.Nested(RangeSchema),
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "Replaces every range; held MACs are never moved"},
    )


# --- scopes ------------------------------------------------------------------------------


class ScopeSchema(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    name = fields.String(required=True)
    path = fields.String(required=True)
    parent_id = Id(required=True, allow_none=True)
    pool_id = Id(required=True, allow_none=True, metadata={"description": "The pool assigned here"})
    effective_pool_id = fields.Integer(required=True)
    effective_pool = fields.String(required=True)
    inherited_from = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Path of the ancestor the pool is inherited from"},
    )
    description = fields.String(required=True)


class ScopeQueryArgsSchema(Schema):
    path = Text(
        validate=PATH, metadata={"description": "Only the scope with this path, e.g. /dc1/c1"}
    )


class ScopeCreateSchema(Schema):
    EXCLUSIVE = (("parent", "parent_id"),)
    kind = Text(required=True, validate=validate.OneOf(["datacenter", "cluster", "namespace"]))
    name = Text(required=True, validate=NAME)
    parent_id = Id(metadata={"description": "Parent scope id (default: the engine)"})
    parent = Text(
        validate=PATH,
        metadata={"description": "Parent scope path, e.g. /dc1 (instead of parent_id)"},
    )
    pool_id = Id(allow_none=True, load_default=None)
    description = Text(load_default="", validate=validate.Length(max=4096))


class ScopeUpdateSchema(Schema):
    EXCLUSIVE = (("parent", "parent_id"),)
    name = Text(validate=NAME)
    description = Text(validate=validate.Length(max=4096))
    pool_id = Id(allow_none=True, metadata={"description": "Assign a pool; null inherits again"})
    parent_id = Id(metadata={"description": "Move under this scope"})
    parent = Text(
        validate=PATH,
        metadata={"description": "Move under the scope with this path"},
    )


# --- allocations -------------------------------------------------------------------------


class OwnerSchema(Schema):
    kind = Text(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "vm, pod, ovirt-vm, device, …"},
    )
    name = Text(required=True, validate=validate.Length(min=1, max=512))
    uid = Text(allow_none=True, validate=validate.Length(min=1, max=255))


class AllocationSchema(Schema):
    id = fields.Integer(required=True)
    mac = Mac(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    scope_id = Id(required=True)
    scope = fields.String(required=True)
    pool_id = Id(required=True)
    pool = fields.String(required=True)
    owner = fields.Nested(OwnerSchema, required=True)
    interface = fields.String(required=True)
    in_range = fields.Boolean(
        required=True, metadata={"description": "False when the MAC lies outside the pool"}
    )
    expires_at = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True, allow_none=True)
    origin = fields.String(
        required=True, metadata={"description": "Who created it: a user, token, the webhook, …"}
    )
    handover = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf(HANDOVER_STATES),
        metadata={"description": "Migration hand-over state: pending (reverts on release), final"},
    )
    source = fields.Dict(
        required=True,
        allow_none=True,
        metadata={"description": "The VM it was handed over from (owner, scope, pool, plan)"},
    )


class AllocationRequestSchema(Schema):
    EXCLUSIVE = (("scope", "scope_id"),)
    scope_id = Id(metadata={"description": "Scope id (default: the engine)"})
    scope = Text(
        validate=PATH,
        metadata={"description": "Scope path, e.g. /dc1/c1 (instead of scope_id)"},
    )
    owner = fields.Nested(OwnerSchema, required=True)
    interface = Text(required=True, validate=validate.Length(min=1, max=255))
    mac = AssignableMac(metadata={"description": "Ask for this MAC instead of the next free one"})
    ttl_seconds = fields.Integer(
        validate=validate.Range(min=1, max=MAX_TTL_SECONDS),
        metadata={"description": "Make the allocation pending; released unless confirmed"},
    )
    state = Text(load_default="allocated", validate=validate.OneOf(["allocated", "reserved"]))


class AllocationQueryArgsSchema(Schema):
    mac = Mac()
    pool_id = Id(strict=False)
    scope_id = Id(strict=False)
    scope = Text(metadata={"description": "The scope's path (instead of scope_id)"})
    owner_kind = Text()
    owner_name = Text()
    interface = Text()
    state = Text(validate=validate.OneOf(STATES))
    handover = Text(validate=validate.OneOf(HANDOVER_STATES))


# --- migrations ----------------------------------------------------------------------------


class SourceNicSchema(Schema):
    name = Text(required=True, validate=NAME)
    mac = Text(required=True, validate=validate.Length(min=1, max=64))


class SourceVmSchema(Schema):
    id = Text(required=True, validate=NAME, metadata={"description": "oVirt VM id or KubeVirt UID"})
    name = Text(required=True, validate=validate.Length(min=1, max=512))
    nics = fields.List(fields.Nested(SourceNicSchema), required=True)


class MigrationCheckRequestSchema(Schema):
    scope = Text(
        required=True,
        validate=PATH,
        metadata={"description": "Target scope path, e.g. /kubernetes/team-a (may not exist yet)"},
    )
    vms = fields.List(fields.Nested(SourceVmSchema), required=True)


class HandoverCompleteRequestSchema(Schema):
    plan = Text(validate=NAME, metadata={"description": "Complete every hand-over of this plan"})
    allocation_id = Id(metadata={"description": "Complete this allocation's hand-over"})
    scope = Text(validate=PATH, metadata={"description": "With owner_name: one VM's hand-overs"})
    owner_name = Text(validate=validate.Length(min=1, max=512))


# --- MACs, duplicates, events ------------------------------------------------------------


class PoolRefSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class MacInfoSchema(Schema):
    mac = Mac(required=True)
    held = fields.Boolean(required=True)
    holders = fields.List(fields.Nested(AllocationSchema), required=True)
    pool = fields.Nested(
        PoolRefSchema,
        required=True,
        allow_none=True,
        metadata={"description": "The pool whose range contains the MAC"},
    )


class EventSchema(Schema):
    id = fields.Integer(required=True)
    at = fields.String(required=True)
    actor = fields.String(required=True)
    action = fields.String(required=True)
    target_type = fields.String(required=True)
    target_id = fields.String(required=True, allow_none=True)
    target = fields.String(required=True)
    severity = fields.String(required=True)
    details = fields.Dict(required=True)


class EventQueryArgsSchema(Schema):
    action = Text(metadata={"description": "Action or its prefix, e.g. allocation."})
    actor = Text()
    target_type = Text()
    target_id = Text()
    severity = Text(validate=validate.OneOf(["info", "warning"]))
    since = UtcDateTime(metadata={"description": "Events at or after this time (UTC default)"})
    until = UtcDateTime(metadata={"description": "Events before this time"})


__all__ = [
    "AllocationQueryArgsSchema",
    "AllocationRequestSchema",
    "AllocationSchema",
    "ErrorSchema",
    "EventQueryArgsSchema",
    "EventSchema",
    "MacInfoSchema",
    "OwnerSchema",
    "PoolCreateSchema",
    "PoolSchema",
    "PoolUpdateSchema",
    "RangeSchema",
    "ScopeCreateSchema",
    "ScopeQueryArgsSchema",
    "ScopeSchema",
    "ScopeUpdateSchema",
]
