"""RFC 6902 JSON Patch builders for the objects the webhook mutates, and the transaction stamp.

Only ``add`` is emitted for values that may or may not exist yet: ``add`` on an existing object
member replaces it, so it is valid in both cases, unlike KubeMacPool's ``replace`` which strict
RFC 6902 implementations reject for absent keys.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

#: The VM annotation recording the admission transaction (KubeMacPool's name).
TRANSACTION_ANNOTATION: Final = "kubemacpool.io/transaction-timestamp"
#: Multus' network selection annotation on pods.
MULTUS_NETWORKS_ANNOTATION: Final = "k8s.v1.cni.cncf.io/networks"

JsonPatch = list[dict[str, Any]]

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)
_NS_PER_S = 1_000_000_000


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    if "~" not in token and "/" not in token:  # nearly always: no copy
        return token
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """A JSON Pointer from unescaped tokens, e.g. ``pointer("metadata", "annotations", key)``."""
    return "".join("/" + escape_pointer_token(str(token)) for token in tokens)


def add_op(path: str, value: Any) -> dict[str, Any]:
    """One ``add`` operation."""
    return {"op": "add", "path": path, "value": value}


def replace_op(path: str, value: Any) -> dict[str, Any]:
    """One ``replace`` operation (the target must exist)."""
    return {"op": "replace", "path": path, "value": value}


def interface_mac_op(index: int, mac: str) -> dict[str, Any]:
    """Set ``macAddress`` of the VM template's interface ``index``."""
    path = pointer("spec", "template", "spec", "domain", "devices", "interfaces", index)
    return add_op(path + "/macAddress", mac)


def annotation_ops(obj: Mapping[str, Any], key: str, value: str) -> JsonPatch:
    """Operations that set annotation ``key`` on ``obj``, creating the parent maps if missing."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return [add_op("/metadata", {"annotations": {key: value}})]
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [add_op("/metadata/annotations", {key: value})]
    return [add_op(pointer("metadata", "annotations", key), value)]


def multus_networks_op(value: str) -> dict[str, Any]:
    """Replace the (existing) Multus networks annotation with ``value``; nothing else changes."""
    return replace_op(pointer("metadata", "annotations", MULTUS_NETWORKS_ANNOTATION), value)


def format_transaction_timestamp(epoch_ns: int) -> str:
    """RFC 3339 in UTC with exactly nine fraction digits, e.g. ``2026-08-04T11:29:00.123456789Z``.

    Fixed width (unlike Go's RFC3339Nano, which trims zeros) so stamps also sort as strings.
    """
    seconds, nanos = divmod(epoch_ns, _NS_PER_S)
    return f"{_second(seconds)}.{nanos:09d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a second since the epoch (every review of a second shares it)."""
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"


def now_transaction_timestamp() -> str:
    """The stamp for the current time."""
    return format_transaction_timestamp(time.time_ns())


def parse_transaction_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 stamp (any fraction width, any offset).

    Raises ``ValueError`` for anything else; KubeMacPool's trimmed stamps parse too.
    """
    match = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    date, clock, fraction, offset = match.groups()
    moment = datetime.fromisoformat(f"{date}T{clock}")
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        moment -= sign * timedelta(hours=hours, minutes=minutes)
    seconds = int(moment.replace(tzinfo=UTC).timestamp())
    nanos = int((fraction or "").ljust(9, "0"))
    return seconds * _NS_PER_S + nanos


__all__ = [
    "MULTUS_NETWORKS_ANNOTATION",
    "TRANSACTION_ANNOTATION",
    "JsonPatch",
    "add_op",
    "annotation_ops",
    "escape_pointer_token",
    "format_transaction_timestamp",
    "interface_mac_op",
    "multus_networks_op",
    "now_transaction_timestamp",
    "parse_transaction_timestamp",
    "pointer",
    "replace_op",
]
