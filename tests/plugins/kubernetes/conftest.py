"""Builders for AdmissionReview bodies in the shapes the API server sends."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest

from plugins.kubernetes.review import AdmissionResult, build_response, parse_review
from tests.plugins.kubernetes.fakes import FakeBroker

VM_GVK = {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"}
POD_GVK = {"group": "", "version": "v1", "kind": "Pod"}
VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


def review_body(
    obj: dict[str, Any] | None,
    *,
    gvk: dict[str, str],
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    dry_run: bool = False,
    version: str = "admission.k8s.io/v1",
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
    namespace: str | None = None,
    name: str | None = None,
) -> bytes:
    """A request AdmissionReview as the API server sends it."""
    metadata = (obj or old or {}).get("metadata", {})
    resource = "virtualmachines" if gvk["kind"] == "VirtualMachine" else "pods"
    request: dict[str, Any] = {
        "uid": uid,
        "kind": gvk,
        "resource": {"group": gvk["group"], "version": gvk["version"], "resource": resource},
        "requestKind": gvk,
        "requestResource": {
            "group": gvk["group"],
            "version": gvk["version"],
            "resource": resource,
        },
        "name": metadata.get("name", "") if name is None else name,
        "namespace": namespace or metadata.get("namespace", "default"),
        "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    return json.dumps(
        {"apiVersion": version, "kind": "AdmissionReview", "request": request}
    ).encode()


@dataclass
class Outcome:
    """One review's answer, decoded, and the object after applying its patch."""

    result: AdmissionResult
    response: dict[str, Any]
    patch: list[dict[str, Any]]
    patched: dict[str, Any] | None


Reviewer = Callable[..., AdmissionResult]


def run_review(reviewer: Reviewer, body: bytes, broker: FakeBroker, **kwargs: Any) -> Outcome:
    """Parse, review, encode; decode the patch and apply it (strict RFC 6902) to the object."""
    request = parse_review(body)
    original = copy.deepcopy(request.object)
    result = reviewer(request, broker=broker, **kwargs)
    assert request.object == original, "the review must not mutate the request object"
    response = build_response(request, result)
    inner = response["response"]
    assert inner["uid"] == request.uid
    assert response["apiVersion"] == request.api_version
    patch: list[dict[str, Any]] = []
    if "patch" in inner:
        assert inner["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(inner["patch"]))
    patched = jsonpatch.apply_patch(original, patch) if original is not None else None
    return Outcome(result=result, response=response, patch=patch, patched=patched)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()
