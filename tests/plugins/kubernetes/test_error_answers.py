"""Admission refusals answer every domain error with the status of the channels' one table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from manager.core.errors import DatabaseUnavailable, MacPoolError
from manager.services import answer_for, status_of
from plugins.kubernetes.admission import outage_refusal, review_pod
from plugins.kubernetes.broker import NicClaim, Owner
from plugins.kubernetes.review import parse_review
from tests.plugins.kubernetes.conftest import POD_GVK, review_body

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "annotations": {"k8s.v1.cni.cncf.io/networks": '[{"name": "blue"}]'},
    },
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


def _core_errors(cls: type[MacPoolError] = MacPoolError) -> list[type[MacPoolError]]:
    below = [sub for child in cls.__subclasses__() for sub in _core_errors(child)]
    return [c for c in [cls, *below] if c.__module__ == "manager.core.errors"]


@dataclass
class RefusingBroker:
    """A broker whose every call fails with one error."""

    error: Exception

    def held_macs(self, owner: Owner) -> dict[str, str]:
        raise self.error

    def claim(
        self,
        owner: Owner,
        claims: Sequence[NicClaim],
        *,
        transaction: str | None,
        dry_run: bool,
    ) -> dict[str, str]:
        raise self.error

    def release(self, owner: Owner, interfaces: Sequence[str], *, dry_run: bool) -> None:
        raise self.error


@pytest.mark.parametrize("error_type", _core_errors()[1:], ids=lambda c: c.__name__)
def test_a_refusal_has_the_tables_status(error_type: type[MacPoolError]) -> None:
    error = error_type("refused for a reason")
    request = parse_review(review_body(POD, gvk=POD_GVK))
    result = review_pod(request, broker=RefusingBroker(error))
    assert not result.allowed
    assert result.code == status_of(error) == answer_for(error).status


def test_an_outage_refusal_has_the_tables_status() -> None:
    error = DatabaseUnavailable("connection refused")
    request = parse_review(review_body(POD, gvk=POD_GVK))
    result = outage_refusal(request, error)
    assert (result.allowed, result.code) == (False, 503)
    assert result.code == answer_for(error).status
