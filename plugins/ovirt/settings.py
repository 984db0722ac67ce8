"""The oVirt plugin's settings (``MACPOOL_OVIRT_*``), read and checked with the core's at start
(see :class:`manager.config.PluginSettings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from manager.config import ConfigError, PluginSettings

#: 256 MiB: the API's 1 MiB body limit is far too small for exports.
DEFAULT_MAX_UPLOAD: Final = 256 * 1024 * 1024


@dataclass(frozen=True)
class OvirtSettings(PluginSettings):
    plugin = "ovirt"

    #: The largest export the API and the UI accept, in bytes.
    ovirt_max_upload: int = DEFAULT_MAX_UPLOAD

    def validated(self) -> OvirtSettings:
        if self.ovirt_max_upload < 1:
            raise ConfigError("MACPOOL_OVIRT_MAX_UPLOAD must be at least 1.")
        return self


__all__ = ["DEFAULT_MAX_UPLOAD", "OvirtSettings"]
