"""Shared pieces of the ``macpool`` command: context, output, error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from manager.config import ConfigError, Settings, load_settings
from manager.core.actor import Actor
from manager.core.errors import DatabaseUnavailable, MacPoolError
from manager.db import Database

F = TypeVar("F", bound=Callable[..., Any])

CLI_ACTOR_KIND = "user"


class CliContext:
    """Lazily built settings and database for one command invocation."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._database: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = Database.from_settings(self.settings)
        return self._database

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        with self.database.session(write=write) as session:
            yield session

    @property
    def actor(self) -> Actor:
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry in some containers
            user = "unknown"
        return Actor(f"cli:{user}", CLI_ACTOR_KIND)


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn MacPool and configuration errors into one clear line and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(f"configuration: {exc.message}", 2)
        except (MacPoolError, DatabaseUnavailable) as exc:
            fail(exc.message)
        except OSError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def emit(data: Any, *, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON or through the readable formatter ``text``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text(data))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain, aligned text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


__all__ = ["CliContext", "emit", "fail", "handle_errors", "json_option", "pass_ctx", "table"]
