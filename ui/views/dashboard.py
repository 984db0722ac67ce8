"""The dashboard: every pool's utilization, near-exhaustion warnings, recent warning events."""

from __future__ import annotations

from dataclasses import dataclass

from flask import render_template
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from manager.services import Pool, PoolStats, list_events, list_pools, pool_statistics
from manager.web import settings, unit_of_work
from ui.blueprint import bp

RECENT_WARNINGS = 10


@dataclass(frozen=True)
class PoolSummary:
    """A pool with its statistics and how full it is, for bars and warnings."""

    pool: Pool
    stats: PoolStats
    low_threshold: int

    @property
    def percent(self) -> float:
        if not self.stats.size:
            return 100.0
        return min(100.0, 100.0 * self.stats.allocated / self.stats.size)

    @property
    def exhausted(self) -> bool:
        return self.stats.available == 0

    @property
    def low(self) -> bool:
        return self.stats.available <= self.low_threshold


def pool_summaries(db: Session) -> list[PoolSummary]:
    """Every pool (the default first) with its statistics."""
    threshold = settings().low_threshold
    return [PoolSummary(p, pool_statistics(db, p), threshold) for p in list_pools(db)]


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    """Pools at a glance."""
    with unit_of_work() as db:
        summaries = pool_summaries(db)
        warnings = list_events(db, severity="warning", limit=RECENT_WARNINGS).items
        return render_template(
            "ui/dashboard.html",
            summaries=summaries,
            warnings=warnings,
            low_threshold=settings().low_threshold,
        )
