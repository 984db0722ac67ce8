"""AdmissionReview parsing and encoding; JSON patch and timestamp helpers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from manager.core import InvalidInput
from plugins.kubernetes.patches import (
    annotation_ops,
    escape_pointer_token,
    format_transaction_timestamp,
    parse_transaction_timestamp,
    pointer,
)
from plugins.kubernetes.review import (
    MAX_REVIEW_BYTES,
    AdmissionResult,
    MalformedReview,
    build_response,
    parse_review,
)
from tests.plugins.kubernetes.conftest import POD_GVK, VERSIONS, review_body


def good() -> dict[str, Any]:
    return json.loads(review_body({"metadata": {"name": "p"}}, gvk=POD_GVK))  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", VERSIONS)
def test_parse_review_reads_the_request(version: str) -> None:
    body = review_body(
        {"metadata": {"name": "p", "namespace": "ns"}}, gvk=POD_GVK, version=version, dry_run=True
    )
    request = parse_review(body)
    assert request.api_version == version
    assert request.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert (request.kind.group, request.kind.version, request.kind.kind) == ("", "v1", "Pod")
    assert (request.operation, request.namespace, request.name) == ("CREATE", "ns", "p")
    assert request.object == {"metadata": {"name": "p", "namespace": "ns"}}
    assert request.old_object is None and request.dry_run is True


def mangled(**changes: Any) -> bytes:
    document = good()
    for path, value in changes.items():
        target = document
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(document).encode()


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[" * 200000, id="deeply-nested"),
    pytest.param(mangled(apiVersion="admission.k8s.io/v2"), id="bad-version"),
    pytest.param(mangled(apiVersion=...), id="no-version"),
    pytest.param(mangled(kind="Pod"), id="bad-kind"),
    pytest.param(mangled(request=...), id="no-request"),
    pytest.param(mangled(request="x"), id="request-not-object"),
    pytest.param(mangled(request__uid=...), id="no-uid"),
    pytest.param(mangled(request__uid=""), id="empty-uid"),
    pytest.param(mangled(request__uid=5), id="uid-not-string"),
    pytest.param(mangled(request__operation="PATCH"), id="bad-operation"),
    pytest.param(mangled(request__kind=...), id="no-kind"),
    pytest.param(mangled(request__kind={"group": "", "version": "v1"}), id="kind-without-kind"),
    pytest.param(mangled(request__object=[1]), id="object-not-object"),
    pytest.param(mangled(request__oldObject="x"), id="old-object-not-object"),
    pytest.param(mangled(request__dryRun="yes"), id="dry-run-not-bool"),
    pytest.param(mangled(request__namespace=3), id="namespace-not-string"),
    pytest.param(b" " * (MAX_REVIEW_BYTES + 1), id="oversized"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_reviews_raise(body: bytes) -> None:
    with pytest.raises(MalformedReview) as info:
        parse_review(body)
    assert isinstance(info.value, InvalidInput)
    assert info.value.message


@pytest.mark.parametrize("version", VERSIONS)
def test_response_with_patch_is_base64_json_patch(version: str) -> None:
    request = parse_review(review_body({"metadata": {}}, gvk=POD_GVK, version=version, uid="u1"))
    ops = [{"op": "add", "path": "/a", "value": 1}]
    response = build_response(request, AdmissionResult.allow(ops))
    assert response["apiVersion"] == version and response["kind"] == "AdmissionReview"
    inner = response["response"]
    assert inner["uid"] == "u1" and inner["allowed"] is True
    assert inner["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(inner["patch"])) == ops
    assert "status" not in inner


def test_response_without_patch_has_no_patch_type() -> None:
    request = parse_review(review_body({"metadata": {}}, gvk=POD_GVK))
    inner = build_response(request, AdmissionResult.allow())["response"]
    assert inner == {"uid": request.uid, "allowed": True}


def test_refusal_carries_status() -> None:
    request = parse_review(review_body({"metadata": {}}, gvk=POD_GVK))
    inner = build_response(request, AdmissionResult.deny(409, "nope"))["response"]
    assert inner == {
        "uid": request.uid,
        "allowed": False,
        "status": {"code": 409, "message": "nope"},
    }


def test_refusal_never_carries_a_patch() -> None:
    request = parse_review(review_body({"metadata": {}}, gvk=POD_GVK))
    result = AdmissionResult(allowed=False, patch=[{"op": "add"}], code=422, message="x")
    assert "patch" not in build_response(request, result)["response"]


# --- patches --------------------------------------------------------------------------------


def test_pointer_escapes_tilde_and_slash() -> None:
    assert escape_pointer_token("a~b/c") == "a~0b~1c"
    assert pointer("metadata", "annotations", "kubemacpool.io/x~y", 3) == (
        "/metadata/annotations/kubemacpool.io~1x~0y/3"
    )


def test_annotation_ops_shapes() -> None:
    assert annotation_ops({}, "k", "v") == [
        {"op": "add", "path": "/metadata", "value": {"annotations": {"k": "v"}}}
    ]
    assert annotation_ops({"metadata": {"annotations": None}}, "k", "v") == [
        {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}
    ]


def test_transaction_timestamp_has_nanoseconds() -> None:
    stamp = format_transaction_timestamp(1_785_842_940_000_000_005)
    assert stamp == "2026-08-04T11:29:00.000000005Z"
    assert parse_transaction_timestamp(stamp) == 1_785_842_940_000_000_005


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-08-04T11:29:00.123Z", 1_785_842_940_123_000_000),  # Go trims zeros
        ("2026-08-04T11:29:00Z", 1_785_842_940_000_000_000),
        ("2026-08-04T13:29:00.5+02:00", 1_785_842_940_500_000_000),
        ("2026-08-04t11:29:00z", 1_785_842_940_000_000_000),
    ],
)
def test_parse_transaction_timestamp_forms(text: str, expected: int) -> None:
    assert parse_transaction_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-08-04 11:29:00Z", "2026-13-04T11:29:00Z"])
def test_parse_transaction_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_transaction_timestamp(text)


def test_stamps_sort_as_strings() -> None:
    stamps = [format_transaction_timestamp(n) for n in (10**18, 10**18 + 1, 10**18 + 10**9)]
    assert stamps == sorted(stamps)
