"""What every bench module shares: the result record and latency summaries."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict


class Result(TypedDict):
    """One measured figure, as a bench module's ``run()`` returns it."""

    name: str
    value: float
    unit: str
    notes: str


def result(name: str, value: float, unit: str, notes: str = "") -> Result:
    """Build a :class:`Result` (keeps bench modules short and their keys spelled once)."""
    return Result(name=name, value=value, unit=unit, notes=notes)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values (``fraction`` in (0, 1])."""
    if not sorted_values:
        raise ValueError("percentile() of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_results(name: str, samples_ns: Sequence[int], notes: str) -> list[Result]:
    """p50, p99 and max of ``samples_ns``, in microseconds, as three results."""
    ordered = sorted(samples_ns)
    detail = f"n={len(ordered)}; {notes}"
    return [
        result(f"{name} p50", percentile(ordered, 0.50) / 1000, "µs", detail),
        result(f"{name} p99", percentile(ordered, 0.99) / 1000, "µs", detail),
        result(f"{name} max", ordered[-1] / 1000, "µs", detail),
    ]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (processes that are gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS
