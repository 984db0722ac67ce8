"""First start and every start: the data directory, migrations, the default pool and the
admin account, before anything serves (``macpool serve``, ``macpool db upgrade``, plugins'
set-up commands)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from manager.config import Settings
from manager.core.actor import SYSTEM
from manager.core.mac import format_mac_int
from manager.db import Database
from manager.migrate import upgrade
from manager.services import bootstrap
from manager.services.auth import ensure_admin_user

PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


def prepare(settings: Settings, *, echo: Callable[[str], None] = print) -> Database:
    """Create the data directory, migrate, create the default pool and the admin account."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database.from_settings(settings)
    upgrade(database)
    with database.session(write=True) as session:
        result = bootstrap(session, default_range=settings.default_range or None)
        password = ensure_admin_user(session, SYSTEM)
    if result.created:
        ranges = ", ".join(
            f"{format_mac_int(r.start_mac)}-{format_mac_int(r.end_mac)}"
            for r in result.default_pool.ranges
        )
        echo(f"Created the default pool '{result.default_pool.name}' ({ranges}).")
    if password is not None:
        path = settings.data_dir / PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        echo(f"Created the admin account 'admin' with password: {password}")
        echo(f"(also written to {Path(path).resolve()}, mode 0600; change it after logging in)")
    return database


__all__ = ["PASSWORD_FILE", "prepare"]
