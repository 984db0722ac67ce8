"""The benchmark harness and the core bench module, run at toy sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_core
from bench.common import latency_results, percentile
from bench.run import discover, format_table, main, select
from manager.core import HeldIndex, RangeSet, next_free_mac


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7], 0.99) == 7
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_latency_results_in_microseconds() -> None:
    rows = latency_results("x", [3000, 1000, 2000], "note")
    assert [(r["name"], r["value"], r["unit"]) for r in rows] == [
        ("x p50", 2.0, "µs"),
        ("x p99", 3.0, "µs"),
        ("x max", 3.0, "µs"),
    ]
    assert rows[0]["notes"] == "n=3; note"


def test_discover_and_select() -> None:
    available = discover()
    assert "core" in available
    assert select([], available) == available
    assert select(["bench_core"], available) == ["core"]
    with pytest.raises(SystemExit, match="nope"):
        select(["nope"], available)


def test_shapes_hold_what_they_promise() -> None:
    import random

    rng = random.Random(1)
    runs = bench_core.run_macs(500, rng)
    assert len(runs) == len(set(runs)) == 500 and runs == sorted(runs)
    wrap = bench_core.wrap_path_macs(2100, rng)
    assert len(set(wrap)) == 2100 and wrap[-1] == bench_core.RANGE.end
    # The worst-ish lookup really takes the wrap path: nothing free after the cursor.
    index = HeldIndex.from_sorted(wrap)
    cursor = bench_core.RANGE.end - bench_core.EDGE
    ranges = RangeSet([bench_core.RANGE])
    assert index.first_free(cursor + 1, bench_core.RANGE.end) is None
    assert next_free_mac(ranges, index, cursor) == bench_core.RANGE.start + bench_core.EDGE


def test_main_writes_json_and_prints_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_run = bench_core.run
    monkeypatch.setattr(bench_core, "run", lambda: real_run(held=3000, lookups=50))
    out = tmp_path / "latest.json"
    assert main(["core", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["modules"]["core"]["results"]
    names = {r["name"] for r in results}
    assert "next_free_mac sequential p99" in names
    assert "next_free_mac worst-ish (wrap path) p99" in names
    assert "memory scattered (memory_bytes)" in names
    scattered = next(r for r in results if r["name"] == "memory scattered (memory_bytes)")
    assert scattered["value"] == pytest.approx(16.0, rel=0.01)
    assert report["machine"]["python"]
    assert "next_free_mac sequential p50" in capsys.readouterr().out


def test_format_table_aligns_columns() -> None:
    table = format_table([("core", {"name": "a", "value": 1.5, "unit": "µs", "notes": "n"})])
    header, rule, row = table.splitlines()
    assert header.startswith("module") and set(rule) <= {"-", " "}
    assert row.split() == ["core", "a", "1.50", "µs", "n"]
