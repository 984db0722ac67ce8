"""The UI's pages; importing this package attaches every route and hook to the blueprint."""

from __future__ import annotations

from manager.core.mac import format_mac_int
from manager.core.ranges import unicast_count
from ui.blueprint import bp
from ui.security import guard_request, template_globals
from ui.views import allocations, auth, dashboard, logs, migrations, pools, scopes

bp.before_request(guard_request)
bp.context_processor(template_globals)
bp.add_app_template_filter(format_mac_int, "mac")
bp.add_app_template_filter(unicast_count, "range_size")

__all__ = ["allocations", "auth", "dashboard", "logs", "migrations", "pools", "scopes"]
