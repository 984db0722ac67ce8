"""Reader for REST API exports of ``macpools``, ``datacenters``, ``clusters``, ``vms`` and
``nics``, in XML or JSON (see :mod:`plugins.ovirt.api_tree` for the common shape).

A document may hold one collection (``<mac_pools>``, ``{"mac_pool": […]}``), one object, a
JSON list of objects, or a bundle wrapping several collections. NICs may be nested in their VM
(``follow=nics``) or come separately, each naming its VM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plugins.ovirt.api_tree import Tree, json_tree, parse_api_xml
from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.macs import normalize_ranges, read_nic_mac
from plugins.ovirt.records import (
    Notice,
    OvirtCluster,
    OvirtDataCenter,
    OvirtExport,
    OvirtNic,
    OvirtPool,
    OvirtVm,
)

_PLURALS = {
    "mac_pools": "mac_pool",
    "data_centers": "data_center",
    "datacenters": "data_center",
    "clusters": "cluster",
    "vms": "vm",
    "nics": "nic",
}
_KINDS = frozenset(_PLURALS.values())
#: How each kind shows up in an ``href`` (checked in this order: NIC hrefs contain ``/vms/``).
_HREF_KINDS = (
    ("/macpools/", "mac_pool"),
    ("/datacenters/", "data_center"),
    ("/nics/", "nic"),
    ("/clusters/", "cluster"),
    ("/vms/", "vm"),
)
_BUNDLE_DEPTH = 3


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if value in (None, ""):
        return []
    return [value]


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int):
        return str(value).strip()
    return None


def _ref_id(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return _text(value, "id") or None if isinstance(value, dict) else None


def _bool(obj: dict[str, Any], key: str, *, default: bool, source: str, where: str) -> bool:
    value = obj.get(key)
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return default
    # The engine's JSON renders booleans as strings ("true"/"false").
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise OvirtExportError(f"{where}: '{key}' is {value!r}, expected true or false.", source=source)


def _kind_of(obj: dict[str, Any]) -> str | None:
    href = _text(obj, "href") or ""
    for marker, kind in _HREF_KINDS:
        if marker in href:
            return kind
    if "ranges" in obj:
        return "mac_pool"
    return None


def _entities(tree: Tree, *, source: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(kind, object)`` for every entity at the top of a document or bundle."""
    if depth == 0 and ("id" in tree or "href" in tree):
        kind = _kind_of(tree)
        if kind is None:
            raise OvirtExportError("cannot tell what kind of oVirt object this is.", source=source)
        yield kind, tree
        return
    for key, value in tree.items():
        kind = _PLURALS.get(key, key if key in _KINDS else None)
        if key in _PLURALS:
            value = value.get(kind) if isinstance(value, dict) else value
        elif key == "fault" and isinstance(value, dict):
            detail = _text(value, "detail") or _text(value, "reason") or ""
            raise OvirtExportError(
                f"this is an oVirt API error response, not an export: {detail}", source=source
            )
        for item in _as_list(value) if kind or key == "" else ():
            if not isinstance(item, dict):
                raise OvirtExportError(f"'{key}' holds {item!r}, not an object.", source=source)
            item_kind = kind or _kind_of(item)
            if item_kind is None:
                raise OvirtExportError(
                    "cannot tell what kind of oVirt object this is.", source=source
                )
            yield item_kind, item
        if kind is None and key != "" and isinstance(value, dict) and depth < _BUNDLE_DEPTH:
            yield from _entities(value, source=source, depth=depth + 1)


def _required(obj: dict[str, Any], key: str, *, what: str, source: str) -> str:
    value = _text(obj, key)
    if not value:
        raise OvirtExportError(f"a {what} without '{key}'.", source=source)
    return value


def _pool(obj: dict[str, Any], *, source: str) -> tuple[OvirtPool, list[Notice]]:
    name = _required(obj, "name", what="MAC pool", source=source)
    ranges_value = obj.get("ranges")
    if isinstance(ranges_value, dict):
        ranges_value = ranges_value.get("range")
    raw: list[tuple[str | None, str | None]] = []
    for item in _as_list(ranges_value):
        if not isinstance(item, dict):
            raise OvirtExportError(f"MAC pool '{name}': a range is {item!r}.", source=source)
        raw.append((_text(item, "from"), _text(item, "to")))
    ranges, notices = normalize_ranges(raw, source=source, pool=name)
    where = f"MAC pool '{name}'"
    pool = OvirtPool(
        # A create request carries no id; nothing can reference such a pool but by name.
        id=_text(obj, "id") or name,
        name=name,
        description=_text(obj, "description") or "",
        allow_duplicates=_bool(obj, "allow_duplicates", default=False, source=source, where=where),
        ranges=ranges,
        default_pool=_bool(obj, "default_pool", default=False, source=source, where=where),
        source=source,
    )
    return pool, notices


def _nic(obj: dict[str, Any], *, source: str, vm: str, index: int) -> tuple[OvirtNic, list[Notice]]:
    name = _text(obj, "name") or f"nic{index}"
    mac_value = obj.get("mac")
    raw = _text(mac_value, "address") if isinstance(mac_value, dict) else None
    mac, notices = read_nic_mac(raw, source=source, vm=vm, nic=name)
    where = f"VM '{vm}', NIC '{name}'"
    nic = OvirtNic(
        name=name,
        mac=mac,
        raw_mac=raw,
        id=_text(obj, "id"),
        network=_ref_id(obj, "network"),
        vnic_profile=_ref_id(obj, "vnic_profile"),
        plugged=_bool(obj, "plugged", default=True, source=source, where=where),
        linked=_bool(obj, "linked", default=True, source=source, where=where),
    )
    return nic, notices


def _vm(obj: dict[str, Any], *, source: str) -> tuple[OvirtVm, list[Notice]]:
    vm_id = _required(obj, "id", what="VM", source=source)
    name = _text(obj, "name") or None
    nics_value = obj.get("nics")
    if isinstance(nics_value, dict):
        nics_value = nics_value.get("nic")
    nics: list[OvirtNic] = []
    notices: list[Notice] = []
    for index, item in enumerate(_as_list(nics_value), start=1):
        if isinstance(item, dict):
            nic, nic_notices = _nic(item, source=source, vm=name or vm_id, index=index)
            nics.append(nic)
            notices += nic_notices
    vm = OvirtVm(
        id=vm_id, name=name, nics=tuple(nics), source=source, cluster_id=_ref_id(obj, "cluster")
    )
    return vm, notices


def read_api_tree(tree: Tree, *, source: str) -> OvirtExport:
    """Read the entities of one API document's tree."""
    pools: list[OvirtPool] = []
    dcs: list[OvirtDataCenter] = []
    clusters: list[OvirtCluster] = []
    vms: list[OvirtVm] = []
    loose_nics: dict[str, list[OvirtNic]] = {}
    notices: list[Notice] = []
    for kind, obj in _entities(tree, source=source):
        if kind == "mac_pool":
            pool, pool_notices = _pool(obj, source=source)
            pools.append(pool)
            notices += pool_notices
        elif kind == "data_center":
            dcs.append(
                OvirtDataCenter(
                    id=_required(obj, "id", what="data center", source=source),
                    name=_text(obj, "name") or "",
                    mac_pool_id=_ref_id(obj, "mac_pool"),
                    source=source,
                )
            )
        elif kind == "cluster":
            clusters.append(
                OvirtCluster(
                    id=_required(obj, "id", what="cluster", source=source),
                    name=_text(obj, "name") or "",
                    data_center_id=_ref_id(obj, "data_center"),
                    mac_pool_id=_ref_id(obj, "mac_pool"),
                    source=source,
                )
            )
        elif kind == "vm":
            vm, vm_notices = _vm(obj, source=source)
            vms.append(vm)
            notices += vm_notices
        else:
            vm_id = _ref_id(obj, "vm")
            if vm_id is None:
                raise OvirtExportError(
                    f"NIC '{_text(obj, 'name')}' does not name the VM it belongs to.",
                    source=source,
                )
            group = loose_nics.setdefault(vm_id, [])
            nic, nic_notices = _nic(obj, source=source, vm=vm_id, index=len(group) + 1)
            group.append(nic)
            notices += nic_notices
    vms += [
        OvirtVm(id=vm_id, name=None, nics=tuple(nics), source=source)
        for vm_id, nics in loose_nics.items()
    ]
    known = set(_PLURALS) | _KINDS | {""}
    if not (pools or dcs or clusters or vms) and not known & set(tree) and "id" not in tree:
        raise OvirtExportError(
            f"not an oVirt API export (top level: {', '.join(sorted(tree)) or 'empty'}).",
            source=source,
        )
    return OvirtExport(
        pools=tuple(pools),
        data_centers=tuple(dcs),
        clusters=tuple(clusters),
        vms=tuple(vms),
        warnings=tuple(notices),
    )


def read_api_xml(data: bytes, *, source: str) -> OvirtExport:
    """Read an API export in XML."""
    return read_api_tree(parse_api_xml(data, source=source), source=source)


def read_api_json(data: bytes, *, source: str) -> OvirtExport:
    """Read an API export in JSON (booleans may be strings, as the engine writes them)."""
    return read_api_tree(json_tree(data, source=source), source=source)


__all__ = ["read_api_json", "read_api_tree", "read_api_xml"]
