"""What ``/readyz`` needs to know about the plugin's other processes, and how it finds out.

``/readyz`` is served by the UI/API workers; the webhook listener and the reconciler are
separate processes of the same ``macpool serve``. So:

- the webhook listener is *probed*: a TLS handshake and ``GET /healthz`` on its bind address.
  A port that is bound but whose workers are still booting does not answer, and counts as down;
- the reconciler *reports* a condition retrying will not fix by itself (its namespace is
  missing, RBAC forbids it, its credentials are refused) into a small status file in the data
  directory, and clears it when the condition is gone. The file is per process tree, which is
  what readiness is about: each replica says whether *it* works.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from manager.config import Settings, parse_bind
from plugins.kubernetes.settings import KubernetesSettings

STATUS_FILE: Final = Path("kubernetes") / "reconciler-status.json"
PROBE_TIMEOUT: Final = 2.0


def _status_path(settings: Settings) -> Path:
    return settings.data_dir / STATUS_FILE


def report_problem(settings: Settings, problem: str) -> None:
    """Record why the reconciler cannot work (replaces any earlier problem)."""
    path = _status_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"problem": problem, "since": datetime.now(UTC).isoformat(), "pid": os.getpid()}
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(document))
    partial.replace(path)  # atomic: /readyz never reads half a file


def clear_problem(settings: Settings) -> None:
    """The reconciler works (again)."""
    _status_path(settings).unlink(missing_ok=True)


def reconciler_problem(settings: Settings) -> str | None:
    """The problem the reconciler last reported, or ``None``."""
    try:
        document: Any = json.loads(_status_path(settings).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "reconciler status unreadable"
    return str(document.get("problem") or "") or None


def probe_address(bind: str) -> tuple[str, int]:
    """Where a local client reaches a listener bound to ``bind`` (wildcards mean loopback)."""
    host, port = parse_bind(bind, "MACPOOL_WEBHOOK_BIND")
    if host in ("0.0.0.0", ""):  # noqa: S104 - a bind wildcard, reached through loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def webhook_problem(settings: Settings, *, timeout: float = PROBE_TIMEOUT) -> str | None:
    """``None`` when the webhook listener completes a TLS handshake and answers ``/healthz``."""
    host, port = probe_address(KubernetesSettings.of(settings).webhook_bind)
    # The probe asks "does it serve?", not "is it who it claims?": the certificate names the
    # Service, not the loopback address, so it is not verified here.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"webhook listener on {host}:{port} does not accept connections ({exc})"
    finally:
        connection.close()
    if status != 200:
        return f"webhook listener on {host}:{port} answered /healthz with HTTP {status}"
    return None


__all__ = [
    "STATUS_FILE",
    "clear_problem",
    "probe_address",
    "reconciler_problem",
    "report_problem",
    "webhook_problem",
]
