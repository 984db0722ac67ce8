"""Prometheus metrics of the Kubernetes plugin.

- ``macpool_webhook_admissions_total{resource,result}``,
  ``macpool_webhook_admission_duration_seconds{resource}`` and
  ``macpool_webhook_transaction_reviews`` (reviews per write transaction: group commit's batch
  sizes): MacPool's own admission metrics, counted in every webhook worker. The webhook runs
  several gunicorn worker processes, so these use prometheus_client's multiprocess mode (one
  directory per webhook process, wiped at start).
- ``kubevirt_kmp_duplicate_macs`` and ``kmp_mac_collisions{mac}``: KubeMacPool's collision
  metrics, computed from the database at scrape time so every replica reports the same truth.
  ``kubevirt_kmp_duplicate_macs`` counts, as KubeMacPool's start-up count did, the holders beyond
  the first of every MAC shared by a holder in the cluster scope (with anyone: MACs are unique
  system-wide, and the reconciler's collision report counts the same way);
  ``kmp_mac_collisions{mac}`` is the number of holders of each such MAC (only MACs held more
  than once have a series).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from manager.core.errors import NotFound
from manager.core.mac import format_mac_int
from manager.services import Database, shared_mac_counts

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: At most this many ``kmp_mac_collisions`` series (a flood of collisions must not flood Prometheus).
MAX_COLLISION_SERIES: Final = 1000
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RESULTS: Final = ("allowed", "patched", "denied", "malformed", "too_large", "error")
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def enable_multiprocess(directory: Path) -> None:
    """Switch this process (and the workers it forks) to multiprocess metrics in ``directory``.

    Call before any admission metric exists; the directory is emptied (stale worker files from
    an earlier run would otherwise be summed in).
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value class at import time; pick again now the variable is set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_directory() -> Path | None:
    """The multiprocess metrics directory of this process, if enabled."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class AdmissionMetrics:
    """Admission counters and latency; exposed through :meth:`registry` with the DB collector."""

    def __init__(self) -> None:
        self._own = CollectorRegistry(auto_describe=True)
        # In multiprocess mode values live in files and are collected from there instead.
        target = None if multiprocess_directory() else self._own
        self.admissions = Counter(
            "macpool_webhook_admissions",
            "AdmissionReviews answered by the webhook, by resource and result.",
            ["resource", "result"],
            registry=target,
        )
        self.latency = Histogram(
            "macpool_webhook_admission_duration_seconds",
            "Time to answer an AdmissionReview, from the body read to the answer.",
            ["resource"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.paths = Counter(
            "macpool_webhook_review_paths",
            "AdmissionReviews by how they were answered: from MACs reserved ahead (reserved), "
            "without the database (no_database) or in a write transaction (transaction).",
            ["path"],
            registry=target,
        )
        self.batches = Histogram(
            "macpool_webhook_transaction_reviews",
            "AdmissionReviews that shared one write transaction (group commit).",
            buckets=BATCH_BUCKETS,
            registry=target,
        )

        #: Labelled children by label values: ``labels()`` costs a lock and a lookup per call,
        #: several times per review.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (str(id(metric)), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_path(self, path: str) -> None:
        """Count one review by how it was answered (see GroupCommit.review)."""
        self._child(self.paths, path).inc()

    def observe_batch(self, reviews: int) -> None:
        """Count one write transaction of ``reviews`` reviews."""
        self.batches.observe(reviews)

    def observe(self, resource: str, result: str, seconds: float) -> None:
        """Count one answered review."""
        self._child(self.admissions, resource, result).inc()
        self._child(self.latency, resource).observe(seconds)

    def registry(self, database: Database | None, *, cluster_scope: str) -> CollectorRegistry:
        """A registry with these metrics (all workers') and, given a database, the collisions."""
        directory = multiprocess_directory()
        if directory is None:
            registry = self._own
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        if database is not None:
            registry.register(CollisionCollector(database, cluster_scope=cluster_scope))
        return registry

    @staticmethod
    def shared_registry(
        database: Database, *, cluster_scope: str, directory: Path
    ) -> CollectorRegistry:
        """For another process (the UI/API app): the collisions, plus the webhook workers'
        counters read from ``directory`` whenever the webhook has written any."""
        registry = CollectorRegistry()
        for collector in AdmissionMetrics.shared_collectors(
            database, cluster_scope=cluster_scope, directory=directory
        ):
            registry.register(collector)
        return registry

    @staticmethod
    def shared_collectors(
        database: Database, *, cluster_scope: str, directory: Path
    ) -> list[Collector]:
        """The collectors behind :meth:`shared_registry`, for another app's registry."""
        return [CollisionCollector(database, cluster_scope=cluster_scope), _MetricFiles(directory)]


class _MetricFiles(Collector):
    """The multiprocess metric files of ``directory``, if it exists (it may appear later)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        if not self.directory.is_dir():
            return iter(())
        files = MultiProcessCollector(None, path=str(self.directory))  # type: ignore[no-untyped-call]
        return iter(files.collect())  # type: ignore[no-untyped-call]

    def describe(self) -> Iterator[Metric]:
        return iter(())


class CollisionCollector(Collector):
    """KubeMacPool's collision metrics, read from the allocations of the cluster scope."""

    def __init__(self, database: Database, *, cluster_scope: str) -> None:
        self.database = database
        self.cluster_scope = cluster_scope.rstrip("/")

    def shared_macs(self) -> list[tuple[int, int]]:
        """(MAC, holder count) of every MAC held more than once with a holder in the cluster
        scope; holders outside it count too, as in the collision report."""
        with self.database.session() as session:
            try:
                return shared_mac_counts(session, scope=self.cluster_scope or "/")
            except NotFound:  # no review or sync has created the cluster scope yet
                return []

    def collect(self) -> Iterator[Metric]:
        """Both metric families, from one query."""
        shared = self.shared_macs()
        duplicates = GaugeMetricFamily(
            "kubevirt_kmp_duplicate_macs",
            "Holders beyond the first of every MAC shared in the cluster (KubeMacPool's count).",
            value=sum(count - 1 for _, count in shared),
        )
        collisions = GaugeMetricFamily(
            "kmp_mac_collisions",
            "Count of objects sharing the same MAC address (collision when > 1).",
            labels=["mac"],
        )
        for mac, count in shared[:MAX_COLLISION_SERIES]:
            collisions.add_metric([format_mac_int(mac)], count)
        yield duplicates
        yield collisions

    def describe(self) -> Iterator[Metric]:
        """No description up front: collecting needs the database."""
        return iter(())


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry."""
    return generate_latest(registry)


__all__ = [
    "CONTENT_TYPE",
    "RESULTS",
    "AdmissionMetrics",
    "CollisionCollector",
    "enable_multiprocess",
    "exposition",
    "multiprocess_directory",
]
