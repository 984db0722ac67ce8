"""``kill -9`` of a replica in the middle of HTTP and CLI allocation load, then a restart.

Afterwards every acknowledged allocation is stored, no MAC is held twice, and the stored
allocations add up: acknowledged ones plus, at most, those in flight when the replica died.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    Figures,
    Postgres,
    cli,
    create_token,
    replica_env,
    replicas,
)
from tests.faults.load import Load

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: Seconds of load before the kill, and after the restart.
BEFORE_KILL = 4.0
AFTER_RESTART = 3.0


def _run(envs: list[dict[str, str]], database_url: str, root: Path, figures: Figures) -> None:
    token = create_token(envs[0])
    with replicas(envs, root) as running:
        load = Load(
            urls=[r.url for r in running],
            token=token,
            http_clients=4,
            cli_env=envs[0],
            cli_workers=2,
        )
        load.start()
        time.sleep(BEFORE_KILL)
        victim = running[-1]
        victim.kill9()
        killed_at = len(load.outcomes)
        victim.start()
        time.sleep(AFTER_RESTART)
        load.stop()
    lost, stored = load.settle(database_url, figures)
    acknowledged = load.acknowledged()
    in_doubt = len(load.outcomes) - len(acknowledged) - load.count("4xx")
    figures.counts.update(in_doubt=in_doubt, requests_before_kill=killed_at)
    assert load.count("ack") > 20, "the load must have got through before and after the kill"
    assert lost == [], "every acknowledged allocation is stored with its MAC"
    assert stored.duplicated_macs == 0
    assert stored.held_macs == stored.allocations
    # Unacknowledged requests (connection reset by the kill, 503) may or may not have committed.
    assert len(acknowledged) <= stored.allocations <= len(acknowledged) + in_doubt
    assert load.count("5xx") == 0, "no request may fail with a server error but an outage 503"
    assert load.count("4xx") == 0


def test_kill_9_of_the_sqlite_server_mid_load(tmp_path: Path, figures: Figures) -> None:
    env = replica_env(tmp_path / "data")
    assert cli(env, "db", "upgrade").returncode == 0
    _run([env], f"sqlite:///{tmp_path / 'data' / 'macpool.db'}", tmp_path, figures)


def test_kill_9_of_one_of_two_postgres_replicas_mid_load(
    tmp_path: Path, figures: Figures, postgres: Postgres
) -> None:
    envs = [replica_env(tmp_path / f"data-{i}", postgres.url()) for i in range(2)]
    assert cli(envs[0], "db", "upgrade").returncode == 0
    _run(envs, postgres.url(), tmp_path, figures)
