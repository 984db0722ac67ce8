"""plan_claim: which allocations an owner keeps, releases and needs, for a set of claims."""

from __future__ import annotations

from plugins.kubernetes.broker import NicClaim
from plugins.kubernetes.service_broker import plan_claim

M1, M2, M3 = 0x020000000001, 0x020000000002, 0x020000000003


def test_nothing_held_every_claim_is_new() -> None:
    claims = [NicClaim("a"), NicClaim("b", "02:00:00:00:00:09")]
    plan = plan_claim({}, claims)
    assert (plan.keep, plan.release, plan.new) == ({}, [], claims)


def test_held_mac_kept_when_asked_for_or_not_named() -> None:
    held = {"a": (10, M1), "b": (11, M2)}
    plan = plan_claim(held, [NicClaim("a"), NicClaim("b", "02-00-00-00-00-02")])
    assert plan.keep == {"a": "02:00:00:00:00:01", "b": "02:00:00:00:00:02"}
    assert (plan.release, plan.new) == ([], [])


def test_changed_mac_moves() -> None:
    held = {"a": (10, M1)}
    claims = [NicClaim("a", "02:00:00:00:00:03")]
    plan = plan_claim(held, claims)
    assert (plan.keep, plan.release, plan.new) == ({}, [10], claims)


def test_swapped_macs_both_move() -> None:
    held = {"a": (10, M1), "b": (11, M2)}
    claims = [NicClaim("a", "02:00:00:00:00:02"), NicClaim("b", "02:00:00:00:00:01")]
    plan = plan_claim(held, claims)
    assert (plan.keep, sorted(plan.release), plan.new) == ({}, [10, 11], claims)


def test_renamed_interface_takes_its_mac_along() -> None:
    """The MAC of a dropped interface asked for on a new one is released, then re-requested."""
    held = {"old": (10, M1), "other": (11, M3)}
    claims = [NicClaim("new", "02:00:00:00:00:01")]
    plan = plan_claim(held, claims)
    assert (plan.keep, plan.release, plan.new) == ({}, [10], claims)


def test_dropped_interface_stays_held() -> None:
    """Removal is the reconciler's business once the update is persisted."""
    plan = plan_claim({"gone": (10, M1), "a": (11, M2)}, [NicClaim("a")])
    assert (plan.keep, plan.release, plan.new) == ({"a": "02:00:00:00:00:02"}, [], [])
