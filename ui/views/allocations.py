"""Allocations: search by MAC or owner, reserve a MAC for a device, release, a MAC's page."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from manager.core.actor import Owner
from manager.core.errors import InvalidMac, MacPoolError
from manager.core.mac import format_mac_int, parse_mac
from manager.services import (
    STATES,
    AuditEvent,
    allocate_mac,
    find_allocations,
    get_allocation,
    list_events,
    list_scopes,
    mac_info,
    release_allocation,
    status_of,
)
from manager.web import unit_of_work
from ui.blueprint import bp
from ui.forms import FormState, place_error, text_field
from ui.paging import Pager, requested_page, window
from ui.security import requires, ui_actor

RESERVE_FIELDS = ("scope", "owner_name", "interface", "mac")
#: Reservations made here are for things that are not VMs: routers, appliances, gateways.
RESERVED_OWNER_KIND = "device"


def _looks_like_mac(text: str) -> bool:
    try:
        parse_mac(text)
    except InvalidMac:
        return False
    return True


@bp.get("/allocations")
def allocations() -> ResponseReturnValue:
    """Search allocations by MAC (any accepted form) or by owner name, optionally by state."""
    query = request.args.get("q", "").strip()[:512]
    state = request.args.get("state", "")
    state = state if state in STATES else ""
    by_mac = bool(query) and _looks_like_mac(query)
    with unit_of_work() as db:
        result = find_allocations(
            db,
            mac=query if by_mac else None,
            owner_name=query if query and not by_mac else None,
            state=state or None,
            **window(requested_page()),
        )
        return render_template(
            "ui/allocations.html",
            allocations=result.items,
            pager=Pager.of(result, "ui.allocations", q=query, state=state),
            query=query,
            state=state,
            states=STATES,
            by_mac=by_mac,
        )


def _render_reserve(form: FormState, status: int = 200) -> ResponseReturnValue:
    with unit_of_work() as db:
        page = render_template("ui/reserve.html", form=form, scopes=list_scopes(db))
    return page, status


@bp.route("/allocations/reserve", methods=["GET", "POST"])
@requires("operator")
def reserve() -> ResponseReturnValue:
    """Reserve a MAC (the next free one or a chosen one) for a device in a scope."""
    if request.method == "GET":
        return _render_reserve(FormState(values={"scope": "/", "interface": "eth0"}))
    form = FormState(values={k: text_field(k) for k in RESERVE_FIELDS})
    try:
        with unit_of_work(write=True) as db:
            result = allocate_mac(
                db,
                ui_actor(),
                scope=form.value("scope") or "/",
                owner=Owner(RESERVED_OWNER_KIND, form.value("owner_name")),
                interface=form.value("interface"),
                mac=form.value("mac") or None,
                state="reserved",
            )
            mac, created = format_mac_int(result.allocation.mac), result.created
    except MacPoolError as exc:
        form.errors.update(place_error(exc, RESERVE_FIELDS))
        return _render_reserve(form, status_of(exc))
    if created:
        flash(f"Reserved {mac} for device '{form.value('owner_name')}'.", "success")
    else:
        flash(f"Device '{form.value('owner_name')}' already holds {mac}.", "info")
    return redirect(url_for("ui.mac_page", mac=mac))


@bp.route("/allocations/<int:allocation_id>/release", methods=["GET", "POST"])
@requires("operator")
def release(allocation_id: int) -> ResponseReturnValue:
    """Ask for confirmation, then release this holder of the MAC."""
    if request.method == "POST":
        with unit_of_work(write=True) as db:
            released = release_allocation(db, ui_actor(), allocation_id)
        back = released.get("returned_to")
        flash(
            f"Released {released['mac']} from {released['owner_kind']} '{released['owner_name']}'"
            + (
                f"; the hand-over was not final, so it went back to {back['owner_kind']} "
                f"'{back['owner_name']}'."
                if back
                else "."
            ),
            "success",
        )
        return redirect(url_for("ui.mac_page", mac=released["mac"]))
    with unit_of_work() as db:
        allocation = get_allocation(db, allocation_id)
        return render_template("ui/release.html", allocation=allocation)


@bp.get("/macs/<mac>")
def mac_page(mac: str) -> ResponseReturnValue:
    """Who holds a MAC and which pool's range contains it."""
    with unit_of_work() as db:
        info = mac_info(db, mac[:64])
        text = format_mac_int(info.mac.value)
        history = list_events(db, target_type="mac", target_id=text, limit=100).items
        return render_template(
            "ui/mac.html", info=info, history=[(e, history_line(e)) for e in history]
        )


def history_line(event: AuditEvent) -> str:
    """One event of a MAC's life in words: allocated, imported, handed over, final, released."""
    d = event.details
    owner = f"{d.get('owner_kind', '?')} '{d.get('owner_name', '?')}'"
    if event.action == "allocation.create":
        where = f" in {d.get('scope')} (pool '{d.get('pool')}')" if d.get("scope") else ""
        return f"Allocated to {owner} interface '{d.get('interface', '?')}'{where}"
    if event.action == "allocation.handover":
        source, target = d.get("from") or {}, d.get("to") or {}
        plan = f", plan {d['plan']}" if d.get("plan") else ""
        return (
            f"Handed over from {source.get('owner_kind')} '{source.get('owner_name')}' "
            f"({source.get('scope')}) to {target.get('owner_kind')} '{target.get('owner_name')}' "
            f"({target.get('scope')}){plan}"
        )
    if event.action == "allocation.handover_final":
        return f"Hand-over final ({d.get('reason', 'completed')}): the source VM gave it up"
    if event.action == "allocation.handover_reverted":
        back = d.get("returned_to") or {}
        return (
            f"Given back to {back.get('owner_kind')} '{back.get('owner_name')}' "
            f"({d.get('reason', 'released')} before the hand-over was final)"
        )
    if event.action.startswith("allocation."):
        return f"{event.action.removeprefix('allocation.').capitalize()}: {owner}"
    return event.action
