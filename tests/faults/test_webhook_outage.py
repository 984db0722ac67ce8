"""The admission webhook while its database is stopped: a clear refusal, then service again."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.harness import Figures, Postgres
from tests.plugins.kubernetes.conftest import VM_GVK, review_body
from tests.plugins.kubernetes.test_admission_vm import MULTUS_NET, POD_NET, vm
from tests.plugins.kubernetes.webhook_harness import running_webhook

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _vm_review(name: str) -> bytes:
    interfaces = [{"name": "default", "masquerade": {}}, {"name": "br1", "bridge": {}}]
    obj = vm(interfaces, [POD_NET, MULTUS_NET], name=name, namespace="faults")
    return review_body(obj, gvk=VM_GVK, uid=str(uuid.uuid4()))


def test_webhook_refuses_with_503_while_the_database_is_away(
    tmp_path: Path, figures: Figures, postgres: Postgres
) -> None:
    with running_webhook(tmp_path, MACPOOL_DATABASE_URL=postgres.url()) as webhook:
        client = webhook.session()
        url = f"{webhook.url}/mutate-virtualmachines"
        before = client.post(url, data=_vm_review("before"), timeout=30).json()["response"]
        assert before["allowed"] is True
        postgres.stop()
        answers = []
        for i in range(5):
            began = time.monotonic()
            answer = client.post(url, data=_vm_review(f"during-{i}"), timeout=30)
            answers.append((answer.status_code, time.monotonic() - began, answer.json()))
        postgres.start()
        deadline = time.monotonic() + 10
        while True:
            after = client.post(url, data=_vm_review("after"), timeout=30).json()["response"]
            if after["allowed"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    figures.counts.update(
        reviews_during_outage=len(answers),
        refused_503=sum(1 for _, _, a in answers if a["response"]["status"]["code"] == 503),
        http_5xx=sum(1 for status, _, _ in answers if status >= 500),
        slowest_s=round(max(seconds for _, seconds, _ in answers), 2),
    )
    for status, seconds, body in answers:
        # A refusal the API server shows the user, not an error its failurePolicy decides on.
        assert status == 200, json.dumps(body)
        response = body["response"]
        assert response["allowed"] is False
        assert response["status"]["code"] == 503
        assert "MacPool cannot reach its database" in response["status"]["message"]
        assert "patch" not in response
        assert seconds < 5
    assert after["allowed"] is True, "the webhook admits again once the database is back"
