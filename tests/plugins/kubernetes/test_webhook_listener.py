"""The webhook listener's processes: gunicorn's arbiter over uvicorn workers.

What operators rely on from the arbiter must still hold with the event-loop workers: a stop
signal ends every process promptly, a worker that dies is replaced while the listener keeps
answering, and workers never outlive an arbiter killed with ``kill -9`` (an orphaned worker
would keep the port, and a new replica's listener could not bind it).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import requests

from manager.asgi_server import MAX_HEAD_BYTES
from tests.plugins.kubernetes.webhook_harness import Webhook, running_webhook

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the task ended meanwhile
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _workers(webhook: Webhook, count: int = 2) -> list[int]:
    assert _wait_for(lambda: len(_children(webhook.process.pid)) == count, 20)
    return _children(webhook.process.pid)


def _healthy(webhook: Webhook) -> bool:
    with webhook.session() as client:
        return client.get(f"{webhook.url}/healthz", timeout=5).status_code == 200


def test_sigterm_stops_the_arbiter_and_its_workers_promptly(tmp_path: Path) -> None:
    with running_webhook(tmp_path) as webhook, webhook.session() as idle:
        workers = _workers(webhook)
        # An idle keep-alive connection, as an API server keeps in its pool: it does not read,
        # so it never answers the TLS close. The stop must not wait for it (graceful: 20 s).
        assert idle.get(f"{webhook.url}/healthz", timeout=5).status_code == 200
        started = time.monotonic()
        webhook.process.send_signal(signal.SIGTERM)
        assert webhook.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 8
        assert not any(_alive(pid) for pid in workers)


def test_a_killed_worker_is_replaced_and_the_listener_keeps_answering(tmp_path: Path) -> None:
    with running_webhook(tmp_path) as webhook:
        first, second = _workers(webhook)
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: first not in _children(webhook.process.pid), 10)
        assert len(_workers(webhook)) == 2
        assert all(_healthy(webhook) for _ in range(20))
        assert second in _children(webhook.process.pid)


def test_workers_do_not_outlive_an_arbiter_killed_with_sigkill(tmp_path: Path) -> None:
    with running_webhook(tmp_path) as webhook:
        workers = _workers(webhook)
        webhook.process.kill()
        webhook.process.wait()
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 10), (
            "workers still serving after their arbiter died"
        )
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{webhook.url}/healthz", verify=str(webhook.ca), timeout=5)


def _raw_exchange(webhook: Webhook, head: bytes) -> bytes:
    """Send ``head`` over a fresh TLS connection in 8 KiB pieces; what comes back."""
    context = ssl.create_default_context(cafile=str(webhook.ca))
    port = int(webhook.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("localhost", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as conn,
    ):
        try:
            for start in range(0, len(head), 8192):
                conn.sendall(head[start : start + 8192])
        except OSError:
            pass  # the server may close while we still send: its answer was written first
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def test_request_heads_are_bounded(tmp_path: Path) -> None:
    with running_webhook(tmp_path) as webhook:
        fields = [b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100)]
        start = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
        endless = start + b"".join(fields)  # never ends its head
        assert len(endless) > MAX_HEAD_BYTES
        assert _raw_exchange(webhook, endless).startswith(b"HTTP/1.1 431 ")
        # A complete head over the bound, sent at once, is refused too.
        with webhook.session() as client:
            refused = client.get(f"{webhook.url}/healthz", headers={"X-Big": "a" * 100_000})
            assert refused.status_code == 431
            assert client.get(f"{webhook.url}/healthz").status_code == 200
        # A large but bounded head is served.
        fine = start + b"".join(fields[:40]) + b"Connection: close\r\n\r\n"
        assert MAX_HEAD_BYTES // 2 < len(fine) < MAX_HEAD_BYTES
        assert _raw_exchange(webhook, fine).startswith(b"HTTP/1.1 200 ")
