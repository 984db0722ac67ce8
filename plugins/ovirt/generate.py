"""Write synthetic oVirt export storage domains, for benchmarks and tests.

The OVFs follow what the engine writes (``OvfWriter``): a Content section whose
OperatingSystemSection carries the VM id, and one ``Item`` of ResourceType 10 per NIC. Ids and
MACs are derived from counters, so the same arguments always give the same tree.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from xml.sax.saxutils import escape

from manager.core.mac import format_mac_int

#: Namespace of the generated ids (uuid5), fixed so that trees are reproducible.
_NAMESPACE = uuid.UUID("6f0c1a57-6d1c-4b8e-9a43-8f1d2c3b4a50")
#: First MAC handed to generated NICs: a locally administered unicast block.
DEFAULT_MAC_START = 0x02_1A_4A_00_00_00

_ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1/" \
xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="4.2.0.0">
  <References/>
  <Section xsi:type="ovf:NetworkSection_Type"><Info>List of networks</Info>\
<Network ovf:name="ovirtmgmt"/></Section>
  <Content ovf:id="out" xsi:type="ovf:VirtualSystem_Type">
    <Name>{name}</Name>
    <ClusterName>{cluster}</ClusterName>
    <TemplateId>00000000-0000-0000-0000-000000000000</TemplateId>
    <TemplateName>Blank</TemplateName>
    <Section ovf:id="{vm_id}" ovf:required="false" xsi:type="ovf:OperatingSystemSection_Type">
      <Info>Guest Operating System</Info><Description>other_linux</Description>
    </Section>
    <Section xsi:type="ovf:VirtualHardwareSection_Type">
      <Info>1 CPU, 1024 Memory</Info>
      <Item><rasd:Caption>1 virtual cpu</rasd:Caption><rasd:InstanceId>1</rasd:InstanceId>\
<rasd:ResourceType>3</rasd:ResourceType></Item>
      <Item><rasd:Caption>1024 MB of memory</rasd:Caption><rasd:InstanceId>2</rasd:InstanceId>\
<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
{nics}    </Section>
  </Content>
</ovf:Envelope>
"""

_NIC = """      <Item>
        <rasd:Caption>Ethernet adapter on ovirtmgmt</rasd:Caption>
        <rasd:InstanceId>{nic_id}</rasd:InstanceId>
        <rasd:ResourceType>10</rasd:ResourceType>
        <rasd:OtherResourceType>ovirtmgmt</rasd:OtherResourceType>
        <rasd:ResourceSubType>3</rasd:ResourceSubType>
        <rasd:Connection>ovirtmgmt</rasd:Connection>
        <rasd:Linked>true</rasd:Linked>
        <rasd:Name>{nic_name}</rasd:Name>
        <rasd:MACAddress>{mac}</rasd:MACAddress>
        <rasd:speed>1000</rasd:speed>
        <Type>interface</Type><Device>bridge</Device>
        <BootOrder>0</BootOrder><IsPlugged>true</IsPlugged><IsReadOnly>false</IsReadOnly>
      </Item>
"""


def generated_id(kind: str, number: int) -> str:
    """The reproducible id of the ``number``-th generated object of a kind."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}-{number}"))


def vm_ovf(*, vm_id: str, name: str, macs: list[int], cluster: str = "Default") -> str:
    """The text of one engine-style VM OVF with one NIC per MAC (``nic1``, ``nic2``, …)."""
    nics = "".join(
        _NIC.format(nic_id=generated_id("nic", mac), nic_name=f"nic{i}", mac=format_mac_int(mac))
        for i, mac in enumerate(macs, start=1)
    )
    return _ENVELOPE.format(
        name=escape(name), cluster=escape(cluster), vm_id=escape(vm_id), nics=nics
    )


def write_export_domain(
    root: Path, *, vms: int, nics_per_vm: int, mac_start: int = DEFAULT_MAC_START
) -> Path:
    """Write an export storage domain of ``vms`` VMs with ``nics_per_vm`` NICs each under
    ``root`` and return the domain directory (``root/<sd-id>``, holding ``master/vms``).

    NIC MACs are consecutive from ``mac_start``; VM ``i`` is named ``vm-<i>``.
    """
    domain = root / generated_id("storage-domain", 0)
    vms_dir = domain / "master" / "vms"
    vms_dir.mkdir(parents=True, exist_ok=True)
    mac = mac_start
    for number in range(vms):
        vm_id = generated_id("vm", number)
        folder = vms_dir / vm_id
        folder.mkdir(exist_ok=True)
        macs = list(range(mac, mac + nics_per_vm))
        mac += nics_per_vm
        text = vm_ovf(vm_id=vm_id, name=f"vm-{number}", macs=macs)
        (folder / f"{vm_id}.ovf").write_text(text, encoding="utf-8")
    return domain


__all__ = ["DEFAULT_MAC_START", "generated_id", "vm_ovf", "write_export_domain"]
