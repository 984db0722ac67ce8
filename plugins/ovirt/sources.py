"""oVirt exports as migration sources: the VMs and NIC MACs a migration check is asked about.

Any export the importer reads will do (OVF, OVA, export domain, OVF_STORE, REST API export,
engine backup); the VMs are read exactly as an import reads them, normalisation included.
"""

from __future__ import annotations

from pathlib import Path

from manager.services import SourceNic, SourceVm
from plugins.ovirt.reader import read_paths, read_upload_file
from plugins.ovirt.records import OvirtExport


def migration_sources(path: Path, *, filename: str | None = None) -> list[SourceVm]:
    """The VMs of the export at ``path`` (an upload named ``filename``, or a file or directory),
    each with the NICs that carry a usable MAC; the reader's errors name the file and entry."""
    return export_sources(read_upload_file(filename, path) if filename else read_paths([path]))


def export_sources(export: OvirtExport) -> list[SourceVm]:
    """The VMs of an export read already, as migration sources."""
    return [
        SourceVm(
            id=vm.id,
            name=vm.label,
            nics=[
                SourceNic(name=nic.name, mac=nic.mac_text)
                for nic in vm.nics
                if nic.mac is not None and nic.mac_text is not None
            ],
        )
        for vm in export.vms
    ]


__all__ = ["export_sources", "migration_sources"]
