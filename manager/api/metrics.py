"""Prometheus metrics at ``/metrics``: pool gauges computed at scrape time, API counters.

Under gunicorn with several workers each process counts on its own; when
``PROMETHEUS_MULTIPROC_DIR`` is set (before prometheus_client is imported) the counters and the
histogram are written there and ``/metrics`` aggregates every worker's. The pool gauges are
read from the database at scrape time, so they are right whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from manager.core.errors import MacPoolError
from manager.services import list_pools, pending_handovers, pool_statistics
from manager.web import state, unit_of_work

ALLOCATIONS = Counter(
    "macpool_api_allocations",
    "Allocation requests of the REST API by result (created, existing or the error reason).",
    ["result"],
)
RELEASES = Counter(
    "macpool_api_releases",
    "Release requests of the REST API by result (released or the error reason).",
    ["result"],
)
ALLOCATION_SECONDS = Histogram(
    "macpool_api_allocation_seconds",
    "Time to allocate a MAC through the REST API, database commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


@dataclass
class Outcome:
    """What an observed operation ended with; the caller fills ``result`` on success."""

    result: str = "error"


@contextmanager
def observe(counter: Counter, histogram: Histogram | None = None) -> Iterator[Outcome]:
    """Count the operation by its result (a domain error counts as its reason) and time it."""
    outcome = Outcome()
    began = time.perf_counter()
    try:
        yield outcome
    except MacPoolError as exc:
        outcome.result = exc.reason
        raise
    finally:
        counter.labels(result=outcome.result).inc()
        if histogram is not None:
            histogram.observe(time.perf_counter() - began)


class PoolCollector(Collector):
    """Size, allocated and available MACs of every pool, and the pending migration
    hand-overs, read when Prometheus scrapes."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        families = {
            name: GaugeMetricFamily(f"macpool_pool_{name}", text, labels=["pool", "pool_id"])
            for name, text in (
                ("size", "Unicast MAC addresses in the pool's ranges."),
                ("allocated", "Held MAC addresses inside the pool's ranges."),
                ("available", "Free MAC addresses in the pool's ranges."),
            )
        }
        handovers = GaugeMetricFamily(
            "macpool_handovers_pending",
            "Migration hand-overs not final yet: MACs that go back to their source VM if "
            "the migrated copy is deleted.",
        )
        with self._app.app_context(), unit_of_work() as session:
            for pool in list_pools(session):
                stats = pool_statistics(session, pool)
                labels = [pool.name, str(pool.id)]
                families["size"].add_metric(labels, stats.size)
                families["allocated"].add_metric(labels, stats.allocated)
                families["available"].add_metric(labels, stats.available)
            handovers.add_metric([], pending_handovers(session))
        return [*families.values(), handovers]


class _Forward(Collector):
    """The process-wide default registry, re-exposed through a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry(app: Flask) -> CollectorRegistry:
    """A registry for one scrape: the counters (of every worker in multiprocess mode) + pools."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward())
    registry.register(PoolCollector(app))
    for collector in state(app).metric_collectors:
        registry.register(collector)
    return registry


def init_metrics(app: Flask) -> None:
    """Serve ``/metrics`` (no token: Prometheus scrapes it; it shows counts, not contents)."""

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(scrape_registry(app))
        return Response(body, content_type=CONTENT_TYPE_LATEST)


__all__ = [
    "ALLOCATIONS",
    "ALLOCATION_SECONDS",
    "RELEASES",
    "PoolCollector",
    "init_metrics",
    "observe",
    "scrape_registry",
]
