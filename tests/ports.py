"""Loopback ports for the servers that tests and benches start (etcd, the kube-apiserver,
MacPool's listeners).

A port is chosen here, then bound by another process moments later. Taken from the kernel's
ephemeral range (``bind(("127.0.0.1", 0))``), it could be handed to some process's outgoing
connection in between. That happened: etcd failed to start with "address already in use". The
ports here come from just below the ephemeral range, which the kernel never hands out by itself,
and never twice from one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: How many ports below the ephemeral range are drawn from.
SPAN = 10000
_handed: set[int] = set()


def _below_ephemeral() -> tuple[int, int]:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - SPAN), max(1025, low)


def free_port() -> int:
    """A loopback TCP port nothing is bound to right now, outside the ephemeral range."""
    low, high = _below_ephemeral()
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _handed:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}-{high - 1}")


__all__ = ["free_port"]
