"""The database goes away under load: stopped, then hung. Answers stay clear and quick.

While PostgreSQL is stopped every API route answers 503 ``database_unavailable`` with a
``Retry-After`` within 5 s, the UI shows a page that says so, and no request gets a 500;
once it is back the replicas serve again without a restart. A hung database (a proxy that
accepts connections and forwards nothing) gets the same answers within 5 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import (
    Figures,
    FreezingProxy,
    Postgres,
    Replica,
    cli,
    create_token,
    replica_env,
    replicas,
)
from tests.faults.load import Load

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: The promise: a clear answer within this many seconds, whatever the database does.
ANSWER_WITHIN = 5.0
OUTAGE_SECONDS = 6.0
#: How long the replicas may take to serve again once the database is back.
RECOVERY_WITHIN = 10.0


def _operations(replica: Replica) -> list[tuple[str, str]]:
    """(method, path) of every operation of the OpenAPI document, placeholders filled in."""
    document = requests.get(f"{replica.url}/api/openapi.json", timeout=10).json()
    filled = {"mac": "02:00:00:00:00:01"}
    found = []
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: filled.get(m.group(1), "1"), path)
        found += [(method.upper(), concrete) for method in item if method != "parameters"]
    return found


def _call(url: str, token: str, method: str, path: str) -> tuple[str, int, float, dict[str, Any]]:
    began = time.monotonic()
    response = requests.request(
        method,
        url + path,
        headers={"Authorization": f"Bearer {token}"},
        json={} if method in ("POST", "PATCH") else None,
        timeout=30,
    )
    seconds = time.monotonic() - began
    body: dict[str, Any] = {"retry_after": response.headers.get("Retry-After")}
    if response.status_code >= 400 and response.headers.get("Content-Type") == "application/json":
        body.update(response.json())
    return f"{method} {path}", response.status_code, seconds, body


def _every_route_is_unavailable(
    replica: Replica, token: str, operations: list[tuple[str, str]], figures: Figures
) -> None:
    # Four at a time: with the four load clients, one server thread each (no queueing).
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda op: _call(replica.url, token, *op), operations))
    figures.counts["routes"] = len(answers)
    figures.counts["slowest_route_s"] = round(max(seconds for _, _, seconds, _ in answers), 2)
    wrong = [(name, status) for name, status, _, _ in answers if status != 503]
    assert wrong == [], "every API route answers 503 while the database is away"
    for name, _, seconds, body in answers:
        assert body["reason"] == "database_unavailable", name
        assert body["retry_after"], name
        assert "cannot reach its database" in body["message"], name
        assert seconds < ANSWER_WITHIN, f"{name} took {seconds:.1f} s"


def _ui_session(replica: Replica, data_dir: Path) -> requests.Session:
    """A browser-like session logged in as the initial admin."""
    password = (data_dir / "initial-admin-password").read_text().strip()
    session = requests.Session()
    page = session.get(f"{replica.url}/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    done = session.post(
        f"{replica.url}/login",
        data={"csrf_token": token.group(1), "username": "admin", "password": password},
        timeout=10,
        allow_redirects=False,
    )
    assert done.status_code == 302, done.text
    return session


def _wait_for_recovery(replica: Replica, token: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < RECOVERY_WITHIN:
        _, status, _, _ = _call(replica.url, token, "GET", "/api/v1/pools")
        if status == 200:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"the replica did not serve again within {RECOVERY_WITHIN} s")


def _check_load(load: Load, database_url: str, figures: Figures) -> None:
    lost, stored = load.settle(database_url, figures)
    unavailable = [o for o in load.outcomes if o.kind == "503"]
    figures.counts["slowest_503_s"] = round(max((o.seconds for o in unavailable), default=0), 2)
    assert load.count("5xx") == 0, "an outage is a 503, never another server error"
    assert load.count("4xx") == 0
    assert all(
        "cannot reach its database" in o.reason for o in load.outcomes if o.kind == "cli-error"
    )
    assert all(o.reason == "database_unavailable" and o.retry_after for o in unavailable)
    assert all(o.seconds < ANSWER_WITHIN for o in unavailable)
    assert lost == []
    assert stored.duplicated_macs == 0


def test_postgres_stopped_and_restarted_under_load(
    tmp_path: Path, figures: Figures, postgres: Postgres
) -> None:
    envs = [replica_env(tmp_path / f"data-{i}", postgres.url()) for i in range(2)]
    assert cli(envs[0], "db", "upgrade").returncode == 0
    token = create_token(envs[0])
    with replicas(envs, tmp_path) as running:
        operations = _operations(running[0])
        browser = _ui_session(running[0], tmp_path / "data-0")
        load = Load(urls=[r.url for r in running], token=token, http_clients=4, cli_env=envs[0])
        load.start()
        time.sleep(2)
        postgres.stop()
        stopped = time.monotonic()
        _every_route_is_unavailable(running[1], token, operations, figures)
        page = browser.get(f"{running[0].url}/pools", timeout=10)
        assert page.status_code == 503
        assert "cannot reach its database" in page.text
        assert "Traceback" not in page.text
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        during = len(load.outcomes)
        postgres.start()
        figures.counts["recovery_s"] = round(
            max(_wait_for_recovery(replica, token) for replica in running), 2
        )
        assert browser.get(f"{running[0].url}/pools", timeout=10).status_code == 200
        time.sleep(2)
        load.stop()
    figures.counts["requests_until_restart"] = during
    _check_load(load, postgres.url(), figures)
    assert load.count("503") > 0, "the load met the outage"
    assert load.count("ack") > 20


@contextmanager
def _frozen(proxy: FreezingProxy) -> Iterator[None]:
    proxy.frozen.set()
    try:
        yield
    finally:
        proxy.frozen.clear()


def test_hung_database_answers_503_within_5_seconds(
    tmp_path: Path, figures: Figures, postgres: Postgres
) -> None:
    proxy = FreezingProxy(postgres.port)
    try:
        env = replica_env(tmp_path / "data", postgres.url(proxy.port))
        assert cli(env, "db", "upgrade").returncode == 0
        token = create_token(env)
        with replicas([env], tmp_path) as running:
            operations = _operations(running[0])
            load = Load(urls=[running[0].url], token=token, http_clients=4)
            load.start()
            time.sleep(1.5)
            with _frozen(proxy):
                time.sleep(0.5)  # the load's requests now wait on a database that says nothing
                _every_route_is_unavailable(running[0], token, operations, figures)
                time.sleep(2)
            figures.counts["recovery_s"] = round(_wait_for_recovery(running[0], token), 2)
            time.sleep(1)
            load.stop()
        _check_load(load, postgres.url(), figures)
        assert load.count("503") > 0
    finally:
        proxy.close()
