"""Start the real webhook listener (``macpool k8s webhook``: gunicorn + TLS) for HTTPS tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from manager.config import load_settings
from manager.db import Database
from manager.startup import prepare
from tests.ports import free_port

MACPOOL = Path(sys.executable).with_name("macpool")
DEFAULT_RANGE = "02:00:00:00:00:00-02:00:00:00:ff:ff"


@dataclass
class Webhook:
    """A running webhook: its URL, the CA to verify it with, its database and environment."""

    url: str
    ca: Path
    database: Database
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def session(self) -> requests.Session:
        """A keep-alive HTTPS client that verifies the server against the CA."""
        client = requests.Session()
        # Otherwise REQUESTS_CA_BUNDLE in the environment silently overrides a session's verify.
        client.trust_env = False
        client.verify = str(self.ca)
        return client


def webhook_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """Environment of a webhook on ``port`` whose certificate names ``localhost``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACPOOL_")}
    env.update(
        MACPOOL_DATA_DIR=str(data_dir),
        MACPOOL_WEBHOOK_BIND=f"127.0.0.1:{port}",
        MACPOOL_WEBHOOK_SERVICE="localhost",
        MACPOOL_PLUGINS="kubernetes",
        MACPOOL_K8S_RECONCILE="false",
        MACPOOL_DEFAULT_RANGE=DEFAULT_RANGE,
        MACPOOL_WORKERS="2",
        MACPOOL_THREADS="4",
        MACPOOL_LOG_LEVEL="WARNING",
    )
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(extra)
    return env


@contextmanager
def running_webhook(
    data_dir: Path, *, ca: Path | None = None, args: tuple[str, ...] = (), **extra: str
) -> Iterator[Webhook]:
    """Migrate the database here, start the listener in a child process, stop it afterwards."""
    port = free_port()
    env = webhook_env(data_dir, port, **extra)
    settings = load_settings(environ=env)
    database = prepare(settings, echo=lambda _line: None)
    log = (data_dir / "webhook.log").open("wb")
    process = subprocess.Popen(
        [str(MACPOOL), "k8s", "webhook", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    ca_path = ca or data_dir / "webhook-tls" / "ca-bundle.crt"
    url = f"https://localhost:{port}"
    try:
        _wait_until_up(url, ca_path, process, data_dir / "webhook.log")
        yield Webhook(url=url, ca=ca_path, database=database, env=env, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        database.dispose()


def _wait_until_up(
    url: str, ca: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"webhook exited ({process.returncode}):\n{log.read_text()}")
        if ca.is_file():
            try:
                if requests.get(f"{url}/healthz", verify=str(ca), timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"webhook did not answer within {timeout} s:\n{log.read_text()}")
