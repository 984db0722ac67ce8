"""Core allocator figures: next free MAC, index build time and index memory at 10^6 held MACs.

The pool is one 2^40-address range, 02:00:00:00:00:00-02:ff:ff:ff:ff:ff. Held MACs come in
three shapes:

- sequential: 10^6 MACs handed out in order from the start (one interval); the cursor is at the
  last one, as after a fresh pool's first million allocations.
- fragmented (runs): 10^6 MACs in runs of 1-16 separated by gaps of 1-3 free MACs, as after many
  releases; the cursor has wrapped to the start, so allocation walks through the gaps and each
  new MAC usually merges two intervals.
- scattered: 10^6 MACs at uniformly random addresses (about 10^6 one-MAC intervals: fully
  fragmented); the cursor has wrapped to the start.
- alternating: every other MAC from the start held (10^6 one-MAC intervals, one-MAC gaps); the
  cursor has wrapped to the start. Each new MAC merges two intervals near the front of the
  index, the most expensive ``HeldIndex.add`` (it shifts the whole interval arrays).
- worst-ish (wrap path): every lookup takes the longest path through ``next_free_mac`` in a
  one-range pool: the MACs after the cursor are all held to the end of the range, so the search
  fails there, wraps, finds the range start held and jumps past it; three binary searches over
  an index of about 10^6 intervals (scattered singletons in between).

Sizes can be lowered for a smoke run with MACPOOL_BENCH_HELD and MACPOOL_BENCH_LOOKUPS.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from collections.abc import Callable

from bench.common import Result, latency_results, result
from manager.core import HeldIndex, MacRange, RangeSet, next_free_mac

RANGE = MacRange(0x020000000000, 0x02FFFFFFFFFF)
HELD = int(os.environ.get("MACPOOL_BENCH_HELD", 1_000_000))
LOOKUPS = int(os.environ.get("MACPOOL_BENCH_LOOKUPS", 10_000))
#: Fixed seed: the same shapes every run, so figures are comparable between runs.
SEED = 20261123
#: Length of the held head and tail of the range in the worst-ish shape.
EDGE = 1000


def sequential_macs(count: int) -> list[int]:
    """``count`` MACs from the start of the range, in order."""
    return list(range(RANGE.start, RANGE.start + count))


def run_macs(count: int, rng: random.Random) -> list[int]:
    """``count`` MACs in runs of 1-16 separated by 1-3 free MACs, from the start of the range."""
    macs: list[int] = []
    mac = RANGE.start
    while len(macs) < count:
        length = min(rng.randint(1, 16), count - len(macs))
        macs.extend(range(mac, mac + length))
        mac += length + rng.randint(1, 3)
    return macs


def alternating_macs(count: int) -> list[int]:
    """Every other MAC from the start of the range."""
    return list(range(RANGE.start, RANGE.start + 2 * count, 2))


def scattered_macs(count: int, rng: random.Random, *, lo: int, hi: int) -> list[int]:
    """``count`` distinct MACs drawn uniformly from ``[lo, hi]``, sorted."""
    return sorted(rng.sample(range(lo, hi + 1), count))


def wrap_path_macs(count: int, rng: random.Random) -> list[int]:
    """A held head and tail of the range with scattered MACs between (the worst-ish shape)."""
    head = list(range(RANGE.start, RANGE.start + EDGE))
    tail = list(range(RANGE.end - EDGE + 1, RANGE.end + 1))
    middle = scattered_macs(
        count - 2 * EDGE, rng, lo=RANGE.start + EDGE + 1, hi=RANGE.end - EDGE - 1
    )
    return head + middle + tail


def allocate_loop(
    ranges: RangeSet, index: HeldIndex, cursor: int | None, lookups: int
) -> tuple[list[int], list[int]]:
    """Hand out ``lookups`` MACs as the service does; nanoseconds of each lookup and each add."""
    lookup_ns: list[int] = []
    add_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(lookups):
        began = clock()
        mac = next_free_mac(ranges, index, cursor)
        found = clock()
        if mac is None:
            raise RuntimeError("pool exhausted during the benchmark")
        index.add(mac)
        added = clock()
        lookup_ns.append(found - began)
        add_ns.append(added - found)
        cursor = mac
    return lookup_ns, add_ns


def repeat_lookup(ranges: RangeSet, index: HeldIndex, cursor: int, lookups: int) -> list[int]:
    """Nanoseconds of ``lookups`` identical lookups (the index is not changed)."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(lookups):
        began = clock()
        mac = next_free_mac(ranges, index, cursor)
        samples.append(clock() - began)
        if mac is None:
            raise RuntimeError("pool exhausted during the benchmark")
    return samples


def build(macs: list[int]) -> tuple[HeldIndex, int]:
    """The index over ``macs`` (sorted) and the best of three build times in nanoseconds."""
    best = None
    index = HeldIndex()
    for _ in range(3):
        began = time.perf_counter_ns()
        index = HeldIndex.from_sorted(macs)
        elapsed = time.perf_counter_ns() - began
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return index, best


def traced_bytes(make: Callable[[], HeldIndex]) -> tuple[HeldIndex, int]:
    """The index ``make()`` returns and the bytes tracemalloc saw it keep allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return index, after - before


def shape_results(label: str, macs: list[int]) -> list[Result]:
    """Build time and memory per held MAC for one shape of held MACs."""
    index, build_ns = build(macs)
    _, traced = traced_bytes(lambda: HeldIndex.from_sorted(macs))
    held = len(index)
    notes = f"{held:,} held, {index.interval_count:,} intervals"
    return [
        result(
            f"build {label}", build_ns / 1e6, "ms", f"HeldIndex.from_sorted, best of 3; {notes}"
        ),
        result(f"memory {label} (memory_bytes)", index.memory_bytes() / held, "B/MAC", notes),
        result(f"memory {label} (tracemalloc)", traced / held, "B/MAC", notes),
    ]


def run(*, held: int = HELD, lookups: int = LOOKUPS) -> list[Result]:
    """Every core figure (about a minute at the default sizes)."""
    rng = random.Random(SEED)
    ranges = RangeSet([RANGE])
    results: list[Result] = []

    shapes = {
        "sequential": sequential_macs(held),
        "fragmented (runs)": run_macs(held, rng),
        "scattered": scattered_macs(held, rng, lo=RANGE.start, hi=RANGE.end),
        "alternating": alternating_macs(held),
    }
    for label, macs in shapes.items():
        results.extend(shape_results(label, macs))

    for label, macs in shapes.items():
        index = HeldIndex.from_sorted(macs)
        # Sequential: the cursor is the last MAC handed out. Otherwise it wrapped at the end.
        cursor = macs[-1] if label == "sequential" else RANGE.end
        notes = f"{len(index):,} held, {index.interval_count:,} intervals, allocating"
        lookup_ns, add_ns = allocate_loop(ranges, index, cursor, lookups)
        results.extend(latency_results(f"next_free_mac {label}", lookup_ns, notes))
        results.extend(latency_results(f"HeldIndex.add {label}", add_ns, notes))
    del shapes

    macs = wrap_path_macs(held, rng)
    index = HeldIndex.from_sorted(macs)
    del macs
    notes = f"{len(index):,} held, {index.interval_count:,} intervals, same lookup repeated"
    samples = repeat_lookup(ranges, index, RANGE.end - EDGE, lookups)
    results.extend(latency_results("next_free_mac worst-ish (wrap path)", samples, notes))
    return results
