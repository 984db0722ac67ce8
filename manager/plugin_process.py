"""Entry point of one plugin process started by ``macpool serve``.

``python -m manager.plugin_process NAME INDEX`` loads the settings the same way ``serve`` did
(environment and ``MACPOOL_CONFIG``) and runs ``processes(settings)[INDEX]`` of plugin NAME.
Running them as separate programs, not forked children, keeps gunicorn's forked workers free of
any handle on them.

``SIGUSR1`` writes the stack of every thread of a plugin process to its standard error (the
log), for a process that seems stuck (``kill -USR1 <pid>``). A plugin process that runs its own
gunicorn arbiter (the webhook listener) gives USR1 gunicorn's meaning instead: reopen the logs.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys

from manager.config import load_settings
from manager.plugins import available_plugins


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m manager.plugin_process NAME INDEX", file=sys.stderr)
        return 2
    name, index = args[0], int(args[1])
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s %(levelname)s {name}: %(message)s"
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    plugin = available_plugins()[name]
    plugin.processes(settings)[index]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
