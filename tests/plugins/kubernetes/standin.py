"""A stand-in Kubernetes API server for the reconciler tests: stdlib http.server on loopback.

It serves what the reconciler and the Lease use, with the API server's wire behaviour:

- lists of namespaces, pods and ``kubevirt.io/v1`` virtualmachines with ``resourceVersion``,
  ``limit`` and ``continue`` (pages come from a snapshot taken at the first page);
- watches (``?watch=true``) as a chunked stream of JSON lines from a resourceVersion, ending at
  ``timeoutSeconds`` with a BOOKMARK when asked for; history older than the last
  :meth:`StandIn.compact` gives ``410 Gone`` (an ERROR event, or an HTTP 410 status);
- ``coordination.k8s.io/v1`` leases: get, create (409 if present), replace (409 on a stale
  resourceVersion).

Objects are stored as dicts with their JSON pre-serialized, so a list of 10^5 VMs is a join.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NAMESPACES = "namespaces"
PODS = "pods"
VMS = "virtualmachines"
LEASES = "leases"
LIST_PATHS = {
    "/api/v1/namespaces": NAMESPACES,
    "/api/v1/pods": PODS,
    "/apis/kubevirt.io/v1/virtualmachines": VMS,
}
LIST_KINDS = {NAMESPACES: "NamespaceList", PODS: "PodList", VMS: "VirtualMachineList"}
LEASE_PREFIX = "/apis/coordination.k8s.io/v1/namespaces/"


@dataclass
class _Stored:
    obj: dict[str, Any]
    raw: bytes


@dataclass
class _Event:
    rv: int
    resource: str
    raw: bytes


@dataclass
class StandIn:
    """The server's state; every mutation bumps one global resourceVersion, like etcd."""

    objects: dict[str, dict[tuple[str, str], _Stored]] = field(
        default_factory=lambda: {NAMESPACES: {}, PODS: {}, VMS: {}, LEASES: {}}
    )
    events: list[_Event] = field(default_factory=list)
    rv: int = 1
    #: Watches from a resourceVersion below this get 410 Gone.
    oldest_rv: int = 1
    #: "event" (200 + ERROR event, as the API server does) or "status" (HTTP 410).
    gone_mode: str = "event"
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    stopping: bool = False
    epoch: int = 0
    snapshots: dict[str, list[bytes]] = field(default_factory=dict)

    # --- mutations -------------------------------------------------------------------------

    def _bump(self, resource: str, obj: dict[str, Any], kind: str) -> bytes:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        raw = json.dumps(obj, separators=(",", ":")).encode()
        event = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode()
        self.events.append(_Event(self.rv, resource, event))
        return raw

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object; watchers see ADDED or MODIFIED."""
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        key = (metadata.get("namespace", ""), metadata["name"])
        with self.lock:
            old = self.objects[resource].get(key)
            metadata.setdefault("uid", old.obj["metadata"]["uid"] if old else str(uuid.uuid4()))
            raw = self._bump(resource, obj, "MODIFIED" if old else "ADDED")
            self.objects[resource][key] = _Stored(obj, raw)
            self.lock.notify_all()
        return obj

    def delete(self, resource: str, namespace: str, name: str) -> None:
        """Delete an object; watchers see DELETED."""
        with self.lock:
            stored = self.objects[resource].pop((namespace, name))
            self._bump(resource, stored.obj, "DELETED")
            self.lock.notify_all()

    def load(self, resource: str, objs: Iterable[dict[str, Any]]) -> None:
        """Add many objects at once, without watch events (as if they existed before)."""
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        with self.lock:
            self.rv += 1
            rv = str(self.rv)
            for obj in objs:
                metadata = obj["metadata"]
                metadata["resourceVersion"] = rv
                metadata.setdefault("uid", str(uuid.uuid4()))
                key = (metadata.get("namespace", ""), metadata["name"])
                self.objects[resource][key] = _Stored(obj, dumps(obj).encode())
            self.oldest_rv = self.rv

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of a stored object, or None."""
        with self.lock:
            stored = self.objects[resource].get((namespace, name))
            return copy.deepcopy(stored.obj) if stored else None

    def compact(self) -> None:
        """Forget the event history and end open watches: resuming them gets 410 Gone."""
        with self.lock:
            self.oldest_rv = self.rv
            self.events.clear()
            self.epoch += 1
            self.lock.notify_all()

    def watch_requests(self, resource: str) -> list[dict[str, str]]:
        """The query parameters of every watch request made for a resource."""
        path = next(p for p, r in LIST_PATHS.items() if r == resource)
        return [q for _, p, q in self.requests if p == path and q.get("watch") == "true"]

    # --- serving ---------------------------------------------------------------------------

    def list_page(self, resource: str, query: dict[str, str]) -> bytes:
        """One page of a list (a snapshot taken at the first page serves the following ones)."""
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self.lock:
            if token:
                snap_id, _, offset_text = token.partition(":")
                items, offset = self.snapshots[snap_id], int(offset_text)
                rv = snap_id.split("-")[0]
            else:
                items = [s.raw for s in self.objects[resource].values()]
                offset, rv = 0, str(self.rv)
                snap_id = f"{rv}-{uuid.uuid4().hex[:8]}"
                if limit and len(items) > limit:
                    self.snapshots[snap_id] = items
        end = offset + limit if limit else len(items)
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if end < len(items):
            metadata["continue"] = f"{snap_id}:{end}"
        head = json.dumps(
            {"kind": LIST_KINDS[resource], "apiVersion": "v1", "metadata": metadata}
        ).encode()[:-1]
        return head + b',"items":[' + b",".join(items[offset:end]) + b"]}"

    def watch_lines(self, resource: str, query: dict[str, str]) -> Iterable[bytes]:
        """The event lines of one watch request, until its timeout, a compaction or stop."""
        since = int(query.get("resourceVersion") or self.rv)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        with self.lock:
            epoch = self.epoch
            if since < self.oldest_rv:
                yield _gone_event()
                return
        sent = since
        while True:
            with self.lock:
                pending = [e for e in self.events if e.rv > sent and e.resource == resource]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.stopping or self.epoch != epoch:
                        break
                    self.lock.wait(min(remaining, 0.2))
                    continue
            for event in pending:
                sent = event.rv
                yield event.raw
        if query.get("allowWatchBookmarks") == "true" and not self.stopping:
            bookmark = {"metadata": {"resourceVersion": str(max(sent, since))}}
            yield json.dumps({"type": "BOOKMARK", "object": bookmark}).encode()


def _gone_event() -> bytes:
    return json.dumps({"type": "ERROR", "object": _gone_status()}).encode()


def _gone_status() -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version",
        "reason": "Expired",
        "code": 410,
    }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on behaviour, not on access logs."""

    def _query(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.server.state.requests.append((self.command, parts.path, query))
        return parts.path, query

    def _send(self, code: int, body: bytes | dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        value = json.loads(self.rfile.read(length) or b"{}")
        assert isinstance(value, dict)
        return value

    def do_GET(self) -> None:
        """Lists, watches and lease reads."""
        path, query = self._query()
        state = self.server.state
        resource = LIST_PATHS.get(path)
        if resource is None:
            self._lease(path, None)
            return
        if query.get("watch") != "true":
            self._send(200, state.list_page(resource, query))
            return
        since = int(query.get("resourceVersion") or state.rv)
        if since < state.oldest_rv and state.gone_mode == "status":
            self._send(410, _gone_status())
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in state.watch_lines(resource, query):
                chunk = line + b"\n"
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (e.g. Watch.stop())
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        """Lease creation."""
        path, _ = self._query()
        self._lease(path, self._body())

    def do_PUT(self) -> None:
        """Lease replacement (optimistic concurrency on resourceVersion)."""
        path, _ = self._query()
        self._lease(path, self._body())

    def _lease(self, path: str, body: dict[str, Any] | None) -> None:
        state = self.server.state
        if not path.startswith(LEASE_PREFIX) or "/leases" not in path:
            self._send(404, _status(404, "NotFound", f"no route {path}"))
            return
        namespace, _, rest = path[len(LEASE_PREFIX) :].partition("/leases")
        name = rest.strip("/")
        with state.lock:
            if body is None:
                stored = state.objects[LEASES].get((namespace, name))
                if stored is None:
                    self._send(404, _status(404, "NotFound", f'leases "{name}" not found'))
                else:
                    self._send(200, stored.raw)
                return
            body.setdefault("metadata", {})["namespace"] = namespace
            name = name or body["metadata"]["name"]
            current = state.objects[LEASES].get((namespace, name))
            if self.command == "POST" and current is not None:
                self._send(409, _status(409, "AlreadyExists", f'leases "{name}" already exists'))
                return
            if self.command == "PUT":
                wanted = body["metadata"].get("resourceVersion")
                if current is None or wanted != current.obj["metadata"]["resourceVersion"]:
                    self._send(409, _status(409, "Conflict", "the object has been modified"))
                    return
            stored_obj = state.put(LEASES, body)  # under the lock: check and write are one step
        self._send(201 if self.command == "POST" else 200, stored_obj)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: StandIn


class StandInServer:
    """Runs a :class:`StandIn` on 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, state: StandIn | None = None) -> None:
        self.state = state or StandIn()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL to give ``kubernetes.client.Configuration(host=...)``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StandInServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.state.lock:
            self.state.stopping = True
            self.state.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Namespace object (with the name label the API server adds)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        },
    }


_counter = itertools.count(1)


def virtual_machine(
    namespace_name: str,
    name: str,
    macs: dict[str, str | None],
    *,
    stamp: str | None = None,
    generate_name: str | None = None,
) -> dict[str, Any]:
    """A kubevirt.io/v1 VirtualMachine whose interfaces (masquerade) carry the given MACs."""
    interfaces = []
    for iface, mac in macs.items():
        entry: dict[str, Any] = {"name": iface, "masquerade": {}}
        if mac is not None:
            entry["macAddress"] = mac
        interfaces.append(entry)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace_name}
    if generate_name:
        metadata["generateName"] = generate_name
    if stamp:
        metadata["annotations"] = {"kubemacpool.io/transaction-timestamp": stamp}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "runStrategy": "Always",
            "template": {
                "spec": {
                    "domain": {"devices": {"interfaces": interfaces}},
                    "networks": [{"name": iface, "pod": {}} for iface in macs],
                }
            },
        },
    }


def pod(namespace_name: str, name: str, macs: dict[str, str]) -> dict[str, Any]:
    """A Pod whose Multus JSON-list annotation attaches networks with the given MACs."""
    elements = [{"name": net, "namespace": namespace_name, "mac": mac} for net, mac in macs.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace_name,
            "annotations": {"k8s.v1.cni.cncf.io/networks": json.dumps(elements)},
        },
        "spec": {"containers": [{"name": "main", "image": f"example/app:{next(_counter)}"}]},
    }


__all__ = [
    "NAMESPACES",
    "PODS",
    "VMS",
    "StandIn",
    "StandInServer",
    "namespace",
    "pod",
    "virtual_machine",
]
