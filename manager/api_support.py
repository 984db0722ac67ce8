"""What every REST endpoint needs, the API's and the plugins' alike (as ``cli_support`` is for
commands): who is calling, and the answer shapes endpoints share.

Who is calling: bearer tokens, roles, and the check every protected view makes.
``authorize(required, principal)`` is the reusable rule (viewer < operator < admin); the UI
could call it with a principal built from its session user. ``requires(blp, role)`` applies it
to an API view and documents the bearer security, 401 and 403 in the OpenAPI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g, request
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from manager.core.actor import Actor
from manager.services.auth import role_allows, verify_token
from manager.services.migration_check import STATUSES as CHECK_STATUSES
from manager.web import unit_of_work

F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEME = "bearerAuth"
REALM = 'Bearer realm="macpool"'
UNAUTHORIZED_RESPONSE = "UNAUTHORIZED"
FORBIDDEN_RESPONSE = "FORBIDDEN"
#: Every authenticated operation reads its token from the database, so any may answer this.
UNAVAILABLE_RESPONSE = "DATABASE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a token (API) or, later, a session user (UI)."""

    name: str
    kind: str
    role: str

    @property
    def actor(self) -> Actor:
        """The audit actor for what this caller changes."""
        return Actor(self.name, self.kind)


def bearer_token() -> str | None:
    """The token of the ``Authorization: Bearer …`` header, or None when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def principal_from_token(plaintext: str | None) -> Principal | None:
    """The active token's principal, or None for a missing, unknown or revoked token."""
    if plaintext is None:
        return None
    with unit_of_work() as session:
        token = verify_token(session, plaintext)
        if token is None:
            return None
        return Principal(name=token.name, kind="token", role=token.role)


def authorize(required: str, principal: Principal | None, *, presented: bool) -> Principal:
    """Return the principal when its role includes ``required``; abort 401 or 403 otherwise.

    ``presented`` says whether credentials were sent at all, so a wrong token is told apart
    from a missing one (RFC 6750 ``invalid_token``).
    """
    if principal is None:
        if presented:
            abort(
                401,
                message="The bearer token is unknown or revoked; create one with "
                "`macpool token create --role ROLE --name NAME`.",
                reason="unauthorized",
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        abort(
            401,
            message="This endpoint needs an API token: send 'Authorization: Bearer <token>'.",
            reason="unauthorized",
            headers={"WWW-Authenticate": REALM},
        )
    assert principal is not None  # abort() never returns
    if not role_allows(principal.role, required):
        abort(
            403,
            message=f"Token '{principal.name}' has the {principal.role} role; this needs "
            f"the {required} role or higher.",
            reason="forbidden",
            errors={"role": principal.role, "required": required},
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
        )
    return principal


def current_principal() -> Principal:
    """The caller authorized for this request (set by :func:`requires`)."""
    return cast(Principal, g.macpool_principal)


def current_actor() -> Actor:
    """The audit actor of this request: the token that was presented."""
    return current_principal().actor


def requires(blp: Blueprint, role: str) -> Callable[[F], F]:
    """Decorate a view so it runs only for callers whose role includes ``role``.

    Put it above the other decorators: the caller is checked before the input is parsed, so
    an anonymous caller learns nothing about the input rules.
    """

    def decorator(func: F) -> F:
        documented = blp.doc(security=[{SECURITY_SCHEME: []}])(func)
        documented = blp.alt_response(401, UNAUTHORIZED_RESPONSE)(documented)
        documented = blp.alt_response(403, FORBIDDEN_RESPONSE)(documented)
        documented = blp.alt_response(503, UNAVAILABLE_RESPONSE)(documented)

        @wraps(documented)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = bearer_token()
            g.macpool_principal = authorize(
                role,
                principal_from_token(token),
                presented=token is not None or "Authorization" in request.headers,
            )
            return documented(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


# --- answer shapes -----------------------------------------------------------------------


class ErrorSchema(Schema):
    """The one error shape of the API."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status phrase"})
    message = fields.String(required=True, metadata={"description": "What went wrong and why"})
    reason = fields.String(
        required=True,
        metadata={"description": "Machine-readable reason, e.g. mac_in_use, pool_exhausted"},
    )
    errors = fields.Dict(
        required=True, metadata={"description": "Details: the field, conflicting objects, …"}
    )


class NicVerdictSchema(Schema):
    vm_id = fields.String(required=True)
    vm_name = fields.String(required=True)
    nic = fields.String(required=True)
    mac = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(CHECK_STATUSES))
    holders = fields.List(fields.Dict(), required=True)
    message = fields.String(required=True)


class MigrationCheckSchema(Schema):
    passes = fields.Boolean(required=True, metadata={"description": "No NIC is in conflict"})
    scope = fields.String(required=True)
    pool = fields.String(required=True, metadata={"description": "The target's effective pool"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    nics = fields.List(fields.Nested(NicVerdictSchema), required=True)


__all__ = [
    "FORBIDDEN_RESPONSE",
    "SECURITY_SCHEME",
    "UNAUTHORIZED_RESPONSE",
    "ErrorSchema",
    "MigrationCheckSchema",
    "NicVerdictSchema",
    "Principal",
    "authorize",
    "bearer_token",
    "current_actor",
    "current_principal",
    "principal_from_token",
    "requires",
]
