"""Reader for one OVF document: engine-written (export domain, OVF_STORE, OVA),
virt-v2v-written, and VMware OVA descriptors.

For each virtual system it finds the VM id and name, the cluster name when the engine wrote
one, and every NIC (``Item`` with ``ResourceType`` 10): its name and MAC. The VM id is the
engine's (the ``ovf:id`` of the OperatingSystemSection), else the system's own ``ovf:id``,
else the id the container gives (``<vm-id>.ovf``). Templates carry no MACs and are skipped.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from plugins.ovirt.errors import OvirtExportError
from plugins.ovirt.macs import parse_lenient_mac, read_nic_mac
from plugins.ovirt.records import Notice, NoticeKind, OvirtExport, OvirtNic, OvirtVm
from plugins.ovirt.xmlsafe import attr, child_text, local, parse_xml

_NETWORK_RESOURCE_TYPE = "10"
_SYSTEM_TAGS = frozenset({"Content", "VirtualSystem"})
_ITEM_TAGS = frozenset({"Item", "EthernetPortItem"})
#: The engine writes ``ovf:id="out"`` on Content; it is not an id.
_NOT_IDS = frozenset({"", "out"})


def _section_type(element: Element) -> str:
    """``OperatingSystemSection`` for ``<OperatingSystemSection>`` and for
    ``<Section xsi:type="ovf:OperatingSystemSection_Type">`` alike."""
    name = local(element.tag)
    if name == "Section":
        xsi_type = attr(element, "type") or ""
        return xsi_type.rsplit(":", 1)[-1].removesuffix("_Type")
    return name


def _sections(system: Element, kind: str) -> list[Element]:
    return [s for s in system if _section_type(s) == kind]


def _systems(root: Element) -> list[Element]:
    # Virtual systems may be nested in a VirtualSystemCollection (multi-VM OVA).
    return [e for e in root.iter() if local(e.tag) in _SYSTEM_TAGS]


def _is_template(system: Element) -> bool:
    return "Template" in (attr(system, "type") or "")


def _vm_id(system: Element, id_hint: str | None) -> str | None:
    for section in _sections(system, "OperatingSystemSection"):
        value = (attr(section, "id") or "").strip()
        if value not in _NOT_IDS and not value.isdigit():
            return value
    own = (attr(system, "id") or "").strip()
    if own not in _NOT_IDS:
        return own
    return id_hint


def _nic_name(item: Element, index: int) -> str:
    for field in ("Name", "ElementName"):
        value = child_text(item, field)
        if value:
            return value
    return f"nic{index}"


def _raw_mac(item: Element) -> str | None:
    raw = child_text(item, "MACAddress")
    if raw is None:
        # VMware puts the MAC of an Ethernet item in rasd:Address when one was exported;
        # the engine uses that element for the PCI address, which is never a MAC.
        address = child_text(item, "Address")
        if address and parse_lenient_mac(address) is not None:
            return address
    return raw


def _flag(item: Element, name: str) -> bool:
    return (child_text(item, name) or "true").lower() != "false"


def _read_nics(system: Element, *, source: str, vm: str) -> tuple[list[OvirtNic], list[Notice]]:
    nics: list[OvirtNic] = []
    notices: list[Notice] = []
    for hardware in _sections(system, "VirtualHardwareSection"):
        for item in hardware:
            if local(item.tag) not in _ITEM_TAGS:
                continue
            if child_text(item, "ResourceType") != _NETWORK_RESOURCE_TYPE:
                continue
            name = _nic_name(item, len(nics) + 1)
            raw = _raw_mac(item)
            mac, mac_notices = read_nic_mac(raw, source=source, vm=vm, nic=name)
            notices += mac_notices
            nics.append(
                OvirtNic(
                    name=name,
                    mac=mac,
                    raw_mac=raw,
                    id=child_text(item, "InstanceId") or child_text(item, "InstanceID"),
                    network=child_text(item, "Connection") or None,
                    vnic_profile=child_text(item, "OtherResourceType") or None,
                    plugged=_flag(item, "IsPlugged"),
                    linked=_flag(item, "Linked"),
                )
            )
    return nics, notices


def _read_system(
    system: Element, *, source: str, id_hint: str | None
) -> tuple[OvirtVm, list[Notice]]:
    name = child_text(system, "Name") or None
    vm_id = _vm_id(system, id_hint) or name
    if not vm_id:
        raise OvirtExportError("the OVF names no VM id and no VM name.", source=source)
    label = name or vm_id
    notices: list[Notice] = []
    if id_hint and vm_id != id_hint:
        notices.append(
            Notice(
                source,
                NoticeKind.VM_ID_MISMATCH,
                f"the OVF gives VM id {vm_id}, but the file is named after "
                f"{id_hint}; the OVF's id is used.",
                vm=label,
            )
        )
    nics, nic_notices = _read_nics(system, source=source, vm=label)
    notices += nic_notices
    vm = OvirtVm(
        id=vm_id,
        name=name,
        nics=tuple(nics),
        source=source,
        cluster_name=child_text(system, "ClusterName") or None,
    )
    return vm, notices


def read_ovf_root(root: Element, *, source: str, id_hint: str | None = None) -> OvirtExport:
    """Read every VM of an already parsed OVF envelope."""
    if local(root.tag) != "Envelope":
        raise OvirtExportError(
            f"not an OVF document (root element <{local(root.tag)}>, expected <Envelope>).",
            source=source,
        )
    vms: list[OvirtVm] = []
    notices: list[Notice] = []
    systems = _systems(root)
    for system in systems:
        if _is_template(system):
            notices.append(
                Notice(source, NoticeKind.SKIPPED, "template skipped: templates carry no MACs.")
            )
            continue
        # Only a single system may fall back on the container's id: two VMs cannot share it.
        vm, vm_notices = _read_system(
            system, source=source, id_hint=id_hint if len(systems) == 1 else None
        )
        vms.append(vm)
        notices += vm_notices
    if not systems:
        raise OvirtExportError("the OVF describes no virtual system.", source=source)
    return OvirtExport(vms=tuple(vms), warnings=tuple(notices))


def read_ovf(data: bytes, *, source: str, id_hint: str | None = None) -> OvirtExport:
    """Parse one OVF document. ``id_hint`` is the VM id its container implies (the file name
    ``<vm-id>.ovf`` of an export domain or OVF_STORE), used when the OVF carries none."""
    return read_ovf_root(parse_xml(data, source=source), source=source, id_hint=id_hint)


__all__ = ["read_ovf", "read_ovf_root"]
