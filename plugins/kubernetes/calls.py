"""How long MacPool waits for the Kubernetes API server (no client import: the webhook alone
runs without the ``kubernetes`` package)."""

from __future__ import annotations

from typing import Final

#: Every call to the API server gives up after this (connect, read) many seconds: a connection
#: the server stopped answering on (a partition without a reset) would otherwise hold the
#: reconciler, its Lease and its certificates forever, silently.
REQUEST_TIMEOUT: Final = (5.0, 30.0)
#: A watch's read may wait this much longer than the ``timeoutSeconds`` the server honours.
WATCH_READ_SLACK: Final = 30.0

__all__ = ["REQUEST_TIMEOUT", "WATCH_READ_SLACK"]
