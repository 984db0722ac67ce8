"""Typed AdmissionReview handling (``admission.k8s.io/v1`` and ``v1beta1``), server-agnostic.

A request body is parsed into an :class:`AdmissionRequest` or rejected with
:class:`MalformedReview` (the HTTP layer answers that with 400); an :class:`AdmissionResult`
is turned back into a response review in the request's own API version, echoing its ``uid``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from manager.core.errors import InvalidInput

ADMISSION_V1: Final = "admission.k8s.io/v1"
ADMISSION_V1BETA1: Final = "admission.k8s.io/v1beta1"
SUPPORTED_VERSIONS: Final = (ADMISSION_V1, ADMISSION_V1BETA1)
#: The largest review accepted (KubeMacPool's controller-runtime limit).
MAX_REVIEW_BYTES: Final = 7 * 1024 * 1024
OPERATIONS: Final = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class MalformedReview(InvalidInput):
    """The body is not a well-formed AdmissionReview request."""

    reason = "malformed_review"


@dataclass(frozen=True)
class GroupVersionKind:
    """``request.kind``: what kind of object is under review."""

    group: str
    version: str
    kind: str


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` the webhook uses."""

    api_version: str
    uid: str
    kind: GroupVersionKind
    operation: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool


@dataclass(frozen=True)
class AdmissionResult:
    """The webhook's answer before it is encoded: allowed with a patch, or refused."""

    allowed: bool
    patch: list[dict[str, Any]] = field(default_factory=list)
    code: int = 200
    message: str | None = None
    #: Interface → MAC the object ends up with (for logs and metrics; not sent).
    macs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def allow(
        cls,
        patch: list[dict[str, Any]] | None = None,
        *,
        message: str | None = None,
        macs: dict[str, str] | None = None,
    ) -> AdmissionResult:
        """Admit the object, applying ``patch`` when it is not empty."""
        return cls(allowed=True, patch=list(patch or []), message=message, macs=dict(macs or {}))

    @classmethod
    def deny(cls, code: int, message: str) -> AdmissionResult:
        """Refuse the object; users see ``admission webhook "…" denied the request: message``."""
        return cls(allowed=False, code=code, message=message)


def parse_review(body: bytes | str) -> AdmissionRequest:
    """Parse a request body; anything but a well-formed AdmissionReview raises MalformedReview."""
    if len(body) > MAX_REVIEW_BYTES:
        raise MalformedReview(f"The AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes.")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedReview(f"The body is not JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise MalformedReview("The body is not a JSON object.")
    api_version = document.get("apiVersion")
    if api_version not in SUPPORTED_VERSIONS:
        raise MalformedReview(
            f"Unsupported apiVersion {api_version!r}: "
            f"expected one of {', '.join(SUPPORTED_VERSIONS)}.",
            field="apiVersion",
        )
    if document.get("kind") != "AdmissionReview":
        kind = document.get("kind")
        raise MalformedReview(f"kind is {kind!r}, not AdmissionReview.", field="kind")
    request = document.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("The review has no request object.", field="request")
    return AdmissionRequest(
        api_version=api_version,
        uid=_text(request, "uid", required=True),
        kind=_kind(request.get("kind")),
        operation=_operation(request.get("operation")),
        namespace=_text(request, "namespace"),
        name=_text(request, "name"),
        object=_object(request, "object"),
        old_object=_object(request, "oldObject"),
        dry_run=_flag(request, "dryRun"),
    )


def build_response(request: AdmissionRequest, result: AdmissionResult) -> dict[str, Any]:
    """The response AdmissionReview, in the request's API version, echoing its uid."""
    response: dict[str, Any] = {"uid": request.uid, "allowed": result.allowed}
    if result.allowed and result.patch:
        encoded = json.dumps(result.patch, separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode("ascii")
    if not result.allowed or result.message:
        status: dict[str, Any] = {"code": result.code}
        if result.message:
            status["message"] = result.message
        response["status"] = status
    return {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}


def _text(request: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = request.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise MalformedReview(f"request.{key} must be a non-empty string.", field=f"request.{key}")
    return value


def _kind(value: object) -> GroupVersionKind:
    if not isinstance(value, dict):
        raise MalformedReview("request.kind must be an object.", field="request.kind")
    parts = [value.get(key, "") for key in ("group", "version", "kind")]
    if not all(isinstance(part, str) for part in parts) or not parts[2]:
        raise MalformedReview(
            "request.kind needs string group, version and kind.", field="request.kind"
        )
    return GroupVersionKind(*parts)


def _operation(value: object) -> str:
    if value not in OPERATIONS:
        raise MalformedReview(
            f"request.operation {value!r} is not one of {', '.join(sorted(OPERATIONS))}.",
            field="request.operation",
        )
    assert isinstance(value, str)
    return value


def _object(request: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedReview(f"request.{key} must be an object.", field=f"request.{key}")
    return value


def _flag(request: Mapping[str, Any], key: str) -> bool:
    value = request.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MalformedReview(f"request.{key} must be a boolean.", field=f"request.{key}")
    return value


__all__ = [
    "ADMISSION_V1",
    "ADMISSION_V1BETA1",
    "MAX_REVIEW_BYTES",
    "AdmissionRequest",
    "AdmissionResult",
    "GroupVersionKind",
    "MalformedReview",
    "build_response",
    "parse_review",
]
