"""Errors of the oVirt export readers.

Every refusal of an export is an :class:`~manager.core.errors.InvalidInput`, so each channel
(API, UI, CLI) already knows how to answer it. The message always starts with the file that was
being read and, where known, the VM and NIC, because an administrator has to find the offending
entry in an export of thousands of files.
"""

from __future__ import annotations

from typing import Any

from manager.core.errors import InvalidInput


def locate(source: str, *, vm: str | None = None, nic: str | None = None) -> str:
    """A human prefix naming where in an export something was found: ``file, VM 'x', NIC 'y'``."""
    where = source
    if vm is not None:
        where += f", VM '{vm}'"
    if nic is not None:
        where += f", NIC '{nic}'"
    return where


class OvirtExportError(InvalidInput):
    """An oVirt export (or one file in it) cannot be read.

    ``source`` is the file (``archive!member`` for archive members); ``vm`` and ``nic`` name
    the entry when the problem is inside one VM.
    """

    reason = "invalid_ovirt_export"

    def __init__(
        self,
        message: str,
        *,
        source: str,
        vm: str | None = None,
        nic: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        full = f"{locate(source, vm=vm, nic=nic)}: {message}"
        merged: dict[str, Any] = {"source": source, **(details or {})}
        if vm is not None:
            merged["vm"] = vm
        if nic is not None:
            merged["nic"] = nic
        super().__init__(full, details=merged)
        self.source = source
        self.vm = vm
        self.nic = nic


class UnsafeInput(OvirtExportError):
    """The input looks hostile: entity expansion, escaping archive members, links, devices."""

    reason = "unsafe_input"


class InputTooLarge(OvirtExportError):
    """A document, an archive or the whole import exceeds one of the reader's size bounds."""

    reason = "input_too_large"


__all__ = ["InputTooLarge", "OvirtExportError", "UnsafeInput", "locate"]
