"""Property-based checks of the live OpenAPI document against the running app (schemathesis).

Every operation of the whole document is called with generated valid and invalid input,
authenticated as admin, and every schemathesis check runs with a fixed example budget: no
answer may be a 5xx or contradict the document (statuses, bodies, headers such as
``X-Pagination``, schema-invalid input refused, schema-valid input accepted).

One allowance, and a check that keeps it narrow: rules JSON Schema cannot state (a range's
start <= end, a namespace scope sits under a cluster, a reserved MAC has no TTL, a pool keeps
one range) are the services' to refuse, with a documented 422 carrying the domain's reason.
So schema-valid input may get a 422, but only from the services: a refusal by the request
parser (its ``errors`` keyed by location: ``json``, ``query``, ``path``) means the document
failed to declare a limit the server enforces, and fails :func:`limits_are_declared`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import PositiveDataAcceptanceConfig

from manager.app import create_app
from manager.core.actor import Actor
from manager.db import Base, Database
from manager.services import bootstrap
from manager.services.auth import create_token
from tests.conftest import DEFAULT_RANGE

pytestmark = pytest.mark.faults

#: Examples per operation (the fixed budget).
EXAMPLES = 12
PARSER_LOCATIONS = {"json", "query", "path", "headers", "form"}


def _admin_app(tmp: Path) -> tuple[str, Flask]:
    url = f"sqlite:///{tmp / 'macpool.db'}"
    db = Database(url)
    Base.metadata.create_all(db.engine)
    with db.session(write=True) as session:
        bootstrap(session, default_range=DEFAULT_RANGE)
        _, token = create_token(session, Actor("schemathesis"), name="st", role="admin")
    db.dispose()
    return token, create_app({"database_url": url, "data_dir": str(tmp), "plugins": ""})


# schemathesis' pytest integration needs the schema at collection time (its fixture-based
# loader does not work with pytest 9), so the app lives as long as this module.
_WORKDIR = tempfile.TemporaryDirectory(prefix="macpool-schemathesis-")
TOKEN, APP = _admin_app(Path(_WORKDIR.name))
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)
# The admin token goes on every call; requests without it only test 401s (covered by
# test_authorization.py) and would clash with the header set below.
schema.config.generation.update(with_security_parameters=False)
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
)


@schemathesis.check
def limits_are_declared(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Schema-valid input is never refused by the request parser (see the module docstring)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code in (400, 422):
        body = response.json() if response.status_code == 422 else {}
        parser = set((body.get("errors") or {}) if isinstance(body, dict) else {})
        if response.status_code == 400 or parser & PARSER_LOCATIONS:
            raise AssertionError(
                f"schema-valid input refused by the parser: {response.status_code} {body}"
            )
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
