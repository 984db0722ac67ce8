"""Listing and watching the resources the reconciler follows, with the official client.

Objects are handled as plain dicts (``_preload_content=False`` for lists, a ``"object"``
return type for watches): the reconciler reads a handful of fields, and building pydantic
models for 10^5 VMs would cost more than the sync itself.

A :class:`Watcher` thread streams one resource from a resourceVersion into a queue, resumes
from the last version it saw when a stream ends, and reports :class:`Gone` when the API server
answers 410 (the history is compacted): the consumer must then list again.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from plugins.kubernetes.calls import REQUEST_TIMEOUT, WATCH_READ_SLACK

log = logging.getLogger(__name__)

NAMESPACES: Final = "namespaces"
VIRTUAL_MACHINES: Final = "virtualmachines"
PODS: Final = "pods"
RESOURCES: Final = (NAMESPACES, VIRTUAL_MACHINES, PODS)
DEFAULT_PAGE_SIZE: Final = 500

ListFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One ADDED / MODIFIED / DELETED event of a resource."""

    resource: str
    type: str
    object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Gone:
    """The resource's watch history is gone (410): list it again."""

    resource: str


Message = WatchEvent | Gone


def list_functions(api_client: ApiClient) -> dict[str, ListFunction]:
    """The list (and, with ``watch=True``, watch) call of each followed resource."""
    core = CoreV1Api(api_client)
    custom = CustomObjectsApi(api_client)
    return {
        NAMESPACES: core.list_namespace,
        VIRTUAL_MACHINES: functools.partial(
            custom.list_cluster_custom_object, "kubevirt.io", "v1", "virtualmachines"
        ),
        PODS: core.list_pod_for_all_namespaces,
    }


def list_all(
    function: ListFunction, *, page_size: int = DEFAULT_PAGE_SIZE
) -> tuple[list[dict[str, Any]], str]:
    """Every object of a resource (page by page) and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        response = function(
            limit=page_size,
            _continue=token,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        page = json.loads(response.data)
        items.extend(page.get("items") or [])
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            return items, str(metadata.get("resourceVersion") or "")


class _ObjectWatch(watch.Watch):
    """The client's Watch for ``return_type="object"``, each event's JSON parsed once.

    The client makes the event's ``object`` by dumping the parsed object back to JSON and
    deserializing that as ``object``, which is parsing it again into an equal dict; here
    ``object`` is the parsed dict itself (the same one as ``raw_object``, which is what the
    reconciler reads). The resourceVersion is tracked as the client tracks it.
    """

    def unmarshal_event(self, data: str, return_type: str | None) -> dict[str, Any] | None:
        if return_type != "object":
            parsed: dict[str, Any] | None = super().unmarshal_event(  # type: ignore[no-untyped-call]
                data, return_type
            )
            return parsed
        if not data or data.isspace():
            return None
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            return None
        obj = event["object"]
        event["raw_object"] = obj
        if event["type"] != "ERROR" and isinstance(obj, dict):
            metadata = obj.get("metadata")
            if isinstance(metadata, dict) and "resourceVersion" in metadata:
                self.resource_version = metadata["resourceVersion"]
        return dict(event)


class Watcher(threading.Thread):
    """Streams one resource's events into ``sink`` until stopped or the history is gone."""

    def __init__(
        self,
        resource: str,
        function: ListFunction,
        *,
        resource_version: str,
        sink: queue.Queue[Message],
        timeout_seconds: int = 300,
        retry_seconds: float = 1.0,
    ) -> None:
        super().__init__(name=f"watch-{resource}", daemon=True)
        self.resource = resource
        self.function = function
        self.resource_version = resource_version
        self.sink = sink
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self._stopped = threading.Event()
        self._watch = _ObjectWatch(return_type="object")  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        """Ask the thread to end; an open stream is cut at once."""
        self._stopped.set()
        self._watch.stop()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        """Watch, resume from the last resourceVersion, report 410, retry other errors."""
        while not self._stopped.is_set():
            try:
                self._stream_once()
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of %s expired (410 Gone): relisting", self.resource)
                    self.sink.put(Gone(self.resource))
                    return
                log.warning("watch of %s failed: %s", self.resource, exc)
                self._stopped.wait(self.retry_seconds)
            except Exception:  # a network error must not end reconciling: retry
                if self._stopped.is_set():
                    return
                log.warning("watch of %s broke; retrying", self.resource, exc_info=True)
                self._stopped.wait(self.retry_seconds)

    def _stream_once(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.function,
            resource_version=self.resource_version,
            timeout_seconds=self.timeout_seconds,
            allow_watch_bookmarks=True,
            _request_timeout=(REQUEST_TIMEOUT[0], self.timeout_seconds + WATCH_READ_SLACK),
        )
        for event in stream:
            if self._stopped.is_set():
                return
            obj = event.get("raw_object") or event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self.sink.put(WatchEvent(self.resource, event["type"], obj))


__all__ = [
    "NAMESPACES",
    "PODS",
    "RESOURCES",
    "VIRTUAL_MACHINES",
    "Gone",
    "Message",
    "WatchEvent",
    "Watcher",
    "list_all",
    "list_functions",
]
