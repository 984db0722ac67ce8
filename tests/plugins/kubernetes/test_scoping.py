"""Opt modes: namespace labels decide what is managed, and the rendered selector agrees."""

from __future__ import annotations

import itertools

import pytest

from plugins.kubernetes.scoping import (
    is_managed,
    namespace_selector,
    parse_opt_mode,
    selector_matches,
)

VM = "mutatevirtualmachines.kubemacpool.io"
POD = "mutatepods.kubemacpool.io"
OWN = "macpool-system"

CASES = [
    # kind, mode, labels, expected
    ("vm", "opt-in", {VM: "allocate"}, True),
    ("vm", "opt-in", {}, False),
    ("vm", "opt-in", {VM: "disable"}, False),
    ("vm", "opt-in", {POD: "allocate"}, False),
    ("vm", "opt-out", {VM: "ignore"}, False),
    ("vm", "opt-out", {}, True),
    ("vm", "opt-out", {VM: "disable"}, True),
    ("vm", "opt-out", {POD: "ignore"}, True),
    ("pod", "opt-in", {POD: "allocate"}, True),
    ("pod", "opt-out", {POD: "ignore"}, False),
    ("vm", "opt-out", {"runlevel": "0"}, False),
    ("vm", "opt-out", {"runlevel": "1"}, False),
    ("vm", "opt-out", {"runlevel": "2"}, True),
    ("pod", "opt-in", {POD: "allocate", "openshift.io/run-level": "1"}, False),
    ("pod", "opt-in", {POD: "allocate", "openshift.io/run-level": "0"}, False),
]


@pytest.mark.parametrize(("kind", "mode", "labels", "expected"), CASES)
def test_is_managed(kind: str, mode: str, labels: dict[str, str], expected: bool) -> None:
    assert is_managed(kind, labels, "team-a", own_namespace=OWN, mode=parse_opt_mode(mode)) is (
        expected
    )


@pytest.mark.parametrize(("kind", "mode", "labels", "expected"), CASES)
def test_selector_agrees_with_is_managed(
    kind: str, mode: str, labels: dict[str, str], expected: bool
) -> None:
    selector = namespace_selector(kind, mode=parse_opt_mode(mode), own_namespace=OWN)
    labels = {**labels, "kubernetes.io/metadata.name": "team-a"}
    assert selector_matches(selector, labels) is expected


def test_defaults_vms_opt_out_pods_opt_in() -> None:
    assert is_managed("vm", {}, "a", own_namespace=OWN) is True
    assert is_managed("pod", {}, "a", own_namespace=OWN) is False
    assert is_managed("pod", None, "a", own_namespace=OWN) is False


@pytest.mark.parametrize(
    ("kind", "mode"), list(itertools.product(["vm", "pod"], ["opt-in", "opt-out"]))
)
def test_own_namespace_is_never_managed(kind: str, mode: str) -> None:
    labels = {VM: "allocate", POD: "allocate"}
    assert not is_managed(kind, labels, OWN, own_namespace=OWN, mode=parse_opt_mode(mode))
    selector = namespace_selector(kind, mode=parse_opt_mode(mode), own_namespace=OWN)
    assert not selector_matches(selector, {**labels, "kubernetes.io/metadata.name": OWN})


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        parse_opt_mode("sometimes")
    with pytest.raises(ValueError):
        is_managed("ovirt-vm", {}, "a", own_namespace=OWN)
    assert parse_opt_mode(" Opt-In ") == "opt-in"


def test_selector_match_labels_and_exists() -> None:
    selector = {
        "matchLabels": {"a": "1"},
        "matchExpressions": [
            {"key": "b", "operator": "Exists"},
            {"key": "c", "operator": "DoesNotExist"},
        ],
    }
    assert selector_matches(selector, {"a": "1", "b": "x"})
    assert not selector_matches(selector, {"a": "2", "b": "x"})
    assert not selector_matches(selector, {"a": "1"})
    assert not selector_matches(selector, {"a": "1", "b": "x", "c": "y"})
