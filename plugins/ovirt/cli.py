"""``macpool import ovirt PATH…``: read oVirt exports and show (or apply) the import report."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click._termui_impl import ProgressBar

from manager.cli_support import CliContext, handle_errors, json_option, pass_ctx
from plugins.ovirt.importer import ImportOptions, ImportRefused, import_in_phases
from plugins.ovirt.reader import read_paths
from plugins.ovirt.report import ImportReport, render_text


class _Bar:
    """A ``progress(done, total)`` callback drawing a click progress bar on stderr."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.bar: ProgressBar[int] | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


class _Lines:
    """Progress for a log file (``--progress`` when stderr is no terminal): a line on stderr
    at every tenth of the way."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            click.echo(f"{self.label}: {tenth * 10}%", err=True)

    def close(self) -> None:
        return None


@contextmanager
def _progress(label: str, *, wanted: bool) -> Iterator[_Bar | _Lines | None]:
    """A progress bar (lines when stderr is no terminal) while the block runs, or ``None``."""
    bar: _Bar | _Lines | None = None
    if wanted:
        bar = _Bar(label) if _stderr_is_tty() else _Lines(label)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def _show(report: ImportReport, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_text(report))


@click.group("import")
def import_group() -> None:
    """Import MAC pools, scopes and in-use MACs from other systems."""


@import_group.command("ovirt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--apply", "apply_", is_flag=True, help="Write the import (default: dry run).")
@click.option(
    "--reassign-bad-macs",
    is_flag=True,
    help="Give NICs whose MAC is in use elsewhere or outside their pool a new MAC.",
)
@click.option(
    "--scope",
    "scope",
    metavar="PATH",
    help="Scope for VMs whose cluster is not in the export (single OVFs, OVAs).",
)
@click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Progress bars on stderr (default: when stderr is a terminal).",
)
@json_option
@pass_ctx
@handle_errors
def import_ovirt(
    ctx: CliContext,
    paths: tuple[Path, ...],
    apply_: bool,
    reassign_bad_macs: bool,
    scope: str | None,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """Import oVirt exports: .ovf files, .ova archives, export storage domains, OVF_STORE
    archives, REST API exports (XML or JSON), engine-backup archives and engine database
    dumps (engine_backup.db, plain or custom pg_dump format).

    Dry run by default: prints what would be imported, per VM and NIC (kept, new,
    reassigned, external, conflict). Exit status 1 when the import is (or would be) refused.
    """
    wanted = _stderr_is_tty() if show_progress is None else show_progress
    with _progress("Reading", wanted=wanted) as progress:
        export = read_paths(list(paths), progress=progress)
    options = ImportOptions(dry_run=not apply_, reassign_bad_macs=reassign_bad_macs, scope=scope)
    try:
        with _progress("Importing", wanted=wanted) as bar:
            report = import_in_phases(
                ctx.session,
                ctx.actor,
                export,
                options=options,
                sources=[str(p) for p in paths],
                progress=bar,
            )
    except ImportRefused as exc:
        report = exc.report
    finally:
        ctx.database.dispose()  # the command is done with the database: close its connections
    _show(report, as_json=as_json)
    if report.refused:
        sys.exit(1)


__all__ = ["import_group", "import_ovirt"]
