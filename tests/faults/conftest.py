"""Fixtures of the fault suite; every test's figures are printed in pytest's summary."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Figures, Postgres, postgres_bin

_REPORTED: list[Figures] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The test's figures (requests acknowledged, lost, duplicated, 5xx, ...), reported at the end."""
    found = Figures(request.node.name)
    yield found
    print(found.line())
    _REPORTED.append(found)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own, which the test may stop and start."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    # Not under pytest's 0700 temporary directory: the postgres user must reach it.
    server = Postgres(Path(tempfile.mkdtemp(prefix="macpool-faults-pg-")))
    try:
        yield server
    finally:
        server.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORTED:
        terminalreporter.section("fault suite figures")
        for found in _REPORTED:
            terminalreporter.write_line(found.line())
