# The point of this file is passing values of the wrong type on purpose.
# mypy: disable-error-code="arg-type"
"""Bad input on every service entry: a clear error naming the value, nothing half-written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from manager.core.actor import Actor, Owner
from manager.core.errors import InvalidInput, MacPoolError, NotFound
from manager.services import (
    add_range,
    allocate_mac,
    assign_pool,
    confirm_allocation,
    create_pool,
    create_scope,
    delete_pool,
    delete_scope,
    find_allocations,
    find_pool_by_name,
    get_pool,
    get_scope,
    list_duplicates,
    list_events,
    mac_info,
    move_scope,
    release_allocation,
    release_owner,
    remove_range,
    update_pool,
    update_scope,
)
from tests.services.conftest import row_counts

R1 = "0a:00:00:00:00:00-0a:00:00:00:00:ff"
HUGE = "x" * 5000

Call = Callable[[Session, Actor, int], object]


def _alloc(**kwargs: Any) -> Call:
    def call(s: Session, a: Actor, _pool: int) -> object:
        args: dict[str, Any] = {"scope": "/dc", "owner": Owner("vm", "v"), "interface": "n0"}
        return allocate_mac(s, a, **(args | kwargs))

    return call


# (id, call, error family, text the message must contain)
CASES: list[tuple[str, Call, type[MacPoolError], str]] = [
    (
        "pool empty name",
        lambda s, a, p: create_pool(s, a, name="  ", ranges=[R1]),
        InvalidInput,
        "name",
    ),
    (
        "pool long name",
        lambda s, a, p: create_pool(
            s, a, name=HUGE, ranges=["0c:00:00:00:00:00-0c:00:00:00:00:01"]
        ),
        InvalidInput,
        "5000",
    ),
    (
        "pool control chars",
        lambda s, a, p: create_pool(s, a, name="a\x00b", ranges=[R1]),
        InvalidInput,
        "a\\x00b",
    ),
    (
        "pool no ranges",
        lambda s, a, p: create_pool(s, a, name="n", ranges=[]),
        InvalidInput,
        "at least one range",
    ),
    (
        "pool bad range",
        lambda s, a, p: create_pool(s, a, name="n", ranges=["zz-yy"]),
        InvalidInput,
        "zz",
    ),
    (
        "pool reversed range",
        lambda s, a, p: create_pool(s, a, name="n", ranges=["0c:00:00:00:00:09-0c:00:00:00:00:01"]),
        InvalidInput,
        "0c:00:00:00:00:09",
    ),
    (
        "pool multicast bound",
        lambda s, a, p: create_pool(s, a, name="n", ranges=["01:00:00:00:00:00-01:00:00:00:00:09"]),
        InvalidInput,
        "01:00:00:00:00:00",
    ),
    (
        "pool range mapping",
        lambda s, a, p: create_pool(s, a, name="n", ranges=[{"start": "0c:00:00:00:00:00"}]),
        InvalidInput,
        "start",
    ),
    (
        "pool dup flag",
        lambda s, a, p: create_pool(
            s, a, name="n", ranges=["0c:00:00:00:00:00-0c:00:00:00:00:01"], allow_duplicates="yes"
        ),
        InvalidInput,
        "allow_duplicates",
    ),
    (
        "pool description",
        lambda s, a, p: create_pool(
            s, a, name="n", ranges=["0c:00:00:00:00:00-0c:00:00:00:00:01"], description=123
        ),
        InvalidInput,
        "123",
    ),
    ("update name", lambda s, a, p: update_pool(s, a, p, name=""), InvalidInput, "name"),
    (
        "update ranges",
        lambda s, a, p: update_pool(s, a, p, ranges=["0a:00:00:00:00:00"]),
        InvalidInput,
        "0a:00:00:00:00:00",
    ),
    (
        "update description",
        lambda s, a, p: update_pool(s, a, p, description=["x"]),
        InvalidInput,
        "['x']",
    ),
    (
        "update long description",
        lambda s, a, p: update_pool(s, a, p, description=HUGE),
        InvalidInput,
        "5000",
    ),
    (
        "update missing pool",
        lambda s, a, p: update_pool(s, a, 999_999, name="x"),
        NotFound,
        "999999",
    ),
    ("update pool id type", lambda s, a, p: update_pool(s, a, "1", name="x"), InvalidInput, "'1'"),
    ("add range", lambda s, a, p: add_range(s, a, p, "nonsense"), InvalidInput, "nonsense"),
    ("remove range", lambda s, a, p: remove_range(s, a, p, 424242), NotFound, "424242"),
    ("delete missing pool", lambda s, a, p: delete_pool(s, a, 999_999), NotFound, "999999"),
    ("get pool bool", lambda s, a, p: get_pool(s, True), InvalidInput, "True"),
    ("find pool name", lambda s, a, p: find_pool_by_name(s, "nope"), NotFound, "nope"),
    ("find pool type", lambda s, a, p: find_pool_by_name(s, 12), InvalidInput, "12"),
    (
        "scope kind",
        lambda s, a, p: create_scope(s, a, kind="galaxy", name="x"),
        InvalidInput,
        "galaxy",
    ),
    (
        "scope slash",
        lambda s, a, p: create_scope(s, a, kind="datacenter", name="a/b"),
        InvalidInput,
        "a/b",
    ),
    (
        "scope long",
        lambda s, a, p: create_scope(s, a, kind="datacenter", name=HUGE),
        InvalidInput,
        "5000",
    ),
    (
        "scope parent",
        lambda s, a, p: create_scope(s, a, kind="cluster", name="c", parent="/nope"),
        NotFound,
        "/nope",
    ),
    (
        "scope pool",
        lambda s, a, p: create_scope(s, a, kind="datacenter", name="d", pool_id=999_999),
        NotFound,
        "999999",
    ),
    (
        "scope description",
        lambda s, a, p: create_scope(s, a, kind="datacenter", name="d", description=7),
        InvalidInput,
        "7",
    ),
    (
        "scope update description",
        lambda s, a, p: update_scope(s, a, "/dc", description=HUGE),
        InvalidInput,
        "5000",
    ),
    ("scope path", lambda s, a, p: get_scope(s, "no-slash"), InvalidInput, "no-slash"),
    ("scope ref type", lambda s, a, p: get_scope(s, 1.5), InvalidInput, "1.5"),
    ("assign pool", lambda s, a, p: assign_pool(s, a, "/dc", "abc"), InvalidInput, "abc"),
    ("update scope", lambda s, a, p: update_scope(s, a, "/dc", name=" x"), InvalidInput, " x"),
    ("move scope", lambda s, a, p: move_scope(s, a, "/dc", "/missing"), NotFound, "/missing"),
    ("delete scope", lambda s, a, p: delete_scope(s, a, "/missing"), NotFound, "/missing"),
    ("alloc bad mac", _alloc(mac="02:00:00:00:00:zz"), InvalidInput, "02:00:00:00:00:zz"),
    ("alloc multicast", _alloc(mac="03:00:00:00:00:01"), InvalidInput, "03:00:00:00:00:01"),
    ("alloc zero", _alloc(mac="00:00:00:00:00:00"), InvalidInput, "00:00:00:00:00:00"),
    ("alloc mac type", _alloc(mac=12345), InvalidInput, "12345"),
    ("alloc owner kind", _alloc(owner=Owner("", "v")), InvalidInput, "Owner kind"),
    ("alloc owner name", _alloc(owner=Owner("vm", HUGE)), InvalidInput, "xxxxxxxx"),
    ("alloc owner uid", _alloc(owner=Owner("vm", "v", "\n")), InvalidInput, "uid"),
    ("alloc interface", _alloc(interface="eth\x1b0"), InvalidInput, "eth\\x1b0"),
    ("alloc state", _alloc(state="stolen"), InvalidInput, "stolen"),
    ("alloc ttl", _alloc(ttl_seconds=-5), InvalidInput, "-5"),
    ("alloc ttl type", _alloc(ttl_seconds="60"), InvalidInput, "'60'"),
    ("alloc pending no ttl", _alloc(state="pending"), InvalidInput, "ttl_seconds"),
    ("alloc reserved ttl", _alloc(state="reserved", ttl_seconds=5), InvalidInput, "ttl_seconds"),
    ("alloc scope", _alloc(scope="/nope"), NotFound, "/nope"),
    ("alloc scope id", _alloc(scope=999_999), NotFound, "999999"),
    ("release missing", lambda s, a, p: release_allocation(s, a, 999_999), NotFound, "999999"),
    ("release type", lambda s, a, p: release_allocation(s, a, "1"), InvalidInput, "'1'"),
    ("release bool", lambda s, a, p: release_allocation(s, a, True), InvalidInput, "True"),
    ("confirm type", lambda s, a, p: confirm_allocation(s, a, 1.0), InvalidInput, "1.0"),
    ("confirm missing", lambda s, a, p: confirm_allocation(s, a, 999_999), NotFound, "999999"),
    (
        "release owner scope",
        lambda s, a, p: release_owner(s, a, scope="/nope", owner_kind="vm", owner_name="x"),
        NotFound,
        "/nope",
    ),
    ("find mac", lambda s, a, p: find_allocations(s, mac="nope"), InvalidInput, "nope"),
    ("find state", lambda s, a, p: find_allocations(s, state="odd"), InvalidInput, "odd"),
    ("find limit", lambda s, a, p: find_allocations(s, limit=0), InvalidInput, "0"),
    ("find offset", lambda s, a, p: find_allocations(s, offset=-1), InvalidInput, "-1"),
    ("mac info", lambda s, a, p: mac_info(s, "1:2:3"), InvalidInput, "1:2:3"),
    ("duplicates limit", lambda s, a, p: list_duplicates(s, limit=10**6), InvalidInput, "1000000"),
    ("events limit", lambda s, a, p: list_events(s, limit=-1), InvalidInput, "-1"),
]


@pytest.fixture
def pool_id(session: Session, actor: Actor) -> int:
    pool = create_pool(session, actor, name="Lab", ranges=[R1])
    create_scope(session, actor, kind="datacenter", name="dc", pool_id=pool.id)
    allocate_mac(session, actor, scope="/dc", owner=Owner("vm", "kept"), interface="n0")
    return pool.id


@pytest.mark.parametrize(
    ("call", "family", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_cleanly(
    session: Session,
    actor: Actor,
    pool_id: int,
    call: Call,
    family: type[MacPoolError],
    text: str,
) -> None:
    before = row_counts(session)
    with pytest.raises(family) as caught:
        call(session, actor, pool_id)
    assert text in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message
    assert row_counts(session) == before
