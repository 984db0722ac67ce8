"""``python -m manager.plugin_process``: the program ``macpool serve`` runs each plugin process as."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")


def test_sigusr1_writes_where_a_stuck_reconciler_waits(tmp_path: Path) -> None:
    """A reconciler whose API server accepts connections and never answers sits in its Lease
    call; SIGUSR1 makes it write every thread's stack to its log, that call among them."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    hung.settimeout(30)
    kubeconfig = tmp_path / "kubeconfig"
    server = f"http://127.0.0.1:{hung.getsockname()[1]}"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: hung\n"
        f"clusters: [{{name: hung, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: nobody, user: {}}]\n"
        "contexts: [{name: hung, context: {cluster: hung, user: nobody}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACPOOL_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(
        KUBECONFIG=str(kubeconfig),
        MACPOOL_PLUGINS="kubernetes",
        MACPOOL_K8S_RECONCILE="true",
        MACPOOL_DATA_DIR=str(tmp_path),
        MACPOOL_DATABASE_URL=f"sqlite:///{tmp_path / 'macpool.db'}",
    )
    log = tmp_path / "reconciler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "manager.plugin_process", "kubernetes", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    accepted: socket.socket | None = None
    try:
        accepted, _ = hung.accept()  # its first Lease call: connected, never answered
        time.sleep(0.5)
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "try_acquire" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert "most recent call first" in text, text
        assert "try_acquire" in text, text
        assert process.poll() is None  # a dump, not a crash
    finally:
        process.kill()  # SIGTERM would wait for the call's read timeout
        process.wait(timeout=10)
        if accepted is not None:
            accepted.close()
        hung.close()
