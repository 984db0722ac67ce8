"""Benchmarks: run with ``python -m bench.run [names...]``; see docs/BENCHMARKS.md."""
