"""Run the benchmark modules ``bench/bench_*.py`` and record their figures.

    python -m bench.run            # every module
    python -m bench.run core       # only bench_core (``bench_core`` works too)

Each module exposes ``run() -> list[Result]``. The figures are printed as a table and written,
with the date and the machine, to ``bench/results/latest.json`` (not committed: copy the figures
you want to keep into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import bench
from bench.common import Result

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PREFIX = "bench_"


def discover() -> list[str]:
    """Short names (without ``bench_``) of every bench module, sorted."""
    return sorted(
        info.name.removeprefix(PREFIX)
        for info in pkgutil.iter_modules(bench.__path__)
        if info.name.startswith(PREFIX)
    )


def select(requested: list[str], available: list[str]) -> list[str]:
    """The modules to run: all when none is requested; unknown names are an error."""
    if not requested:
        return available
    names = [name.removeprefix(PREFIX) for name in requested]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SystemExit(
            f"unknown bench module(s): {', '.join(unknown)}; available: {', '.join(available)}"
        )
    return names


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def format_table(rows: list[tuple[str, Result]]) -> str:
    """A plain-text table: module, name, value, unit, notes."""
    header = ("module", "name", "value", "unit", "notes")
    lines = [(module, r["name"], f"{r['value']:,.2f}", r["unit"], r["notes"]) for module, r in rows]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(4)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join([*("-" * w for w in widths), "-----"])
    return "\n".join([fmt(header), rule, *(fmt(row) for row in lines)])


def main(argv: list[str] | None = None) -> int:
    """Run the selected modules, print the table and write ``results/latest.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="bench modules to run (default: all)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="where to write JSON"
    )
    args = parser.parse_args(argv)
    names = select(args.names, discover())

    rows: list[tuple[str, Result]] = []
    modules: dict[str, Any] = {}
    for name in names:
        module = importlib.import_module(f"bench.{PREFIX}{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        results: list[Result] = module.run()
        modules[name] = {"seconds": round(time.perf_counter() - began, 2), "results": results}
        rows.extend((name, r) for r in results)

    print(format_table(rows))
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "modules": modules,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
