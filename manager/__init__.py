"""MacPool: collision-aware MAC address pools for virtualization estates."""

__version__ = "0.1.0"
