"""Property-based checks of the live OpenAPI document against the running app (schemathesis).

Every operation is called with generated valid and invalid input, authenticated as admin:
no answer may be a 5xx or contradict the document. Excluded checks, and why:
- ``response_headers_conformance``: flask-smorest documents ``X-Pagination`` as an object
  schema; the header's JSON text cannot be validated against it.
- ``positive_data_acceptance``: cross-field and database rules (start <= end, unique names,
  existing ids, free MACs) are not expressible in OpenAPI, so schema-valid data may get a
  documented 404/409/422.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_headers_conformance,
)

from manager.app import create_app
from manager.core.actor import Actor
from manager.db import Base, Database
from manager.services import bootstrap
from manager.services.auth import create_token
from tests.conftest import DEFAULT_RANGE


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


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[response_headers_conformance, positive_data_acceptance],
    )
