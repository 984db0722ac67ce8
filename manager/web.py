"""Request-side glue shared by the API and the UI: the database, the settings, transactions.

The request owns the transaction: a view opens one unit of work, calls one service function,
and the unit commits when the block succeeds and rolls back when it raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from manager.config import Settings
from manager.db import Database

EXTENSION_KEY = "macpool"


@dataclass
class MacPoolState:
    settings: Settings
    database: Database
    #: Readiness checks contributed by plugins: name -> callable returning (ok, detail).
    ready_checks: dict[str, Any] = field(default_factory=dict)
    #: Prometheus collectors contributed by plugins, exposed on the main ``/metrics``.
    metric_collectors: list[Any] = field(default_factory=list)


def state(app: Flask | None = None) -> MacPoolState:
    return (app or current_app).extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def database() -> Database:
    return state().database


def settings() -> Settings:
    return state().settings


@contextmanager
def unit_of_work(*, write: bool = False) -> Iterator[Session]:
    """A session for one request's work; commits on success, rolls back on error."""
    with database().session(write=write) as session:
        yield session


__all__ = ["EXTENSION_KEY", "MacPoolState", "database", "settings", "state", "unit_of_work"]
