"""Hot-path statements executed straight on the DBAPI cursor of a SQLAlchemy connection.

An allocation runs a handful of small statements. Executed through ``Connection.execute`` each
costs about 40 µs of SQLAlchemy bookkeeping (execution context, parameter and result wrappers,
events) on a 2-core VM, several times what SQLite needs to run it. A :class:`Prepared` statement
is still written in SQLAlchemy Core and compiled by SQLAlchemy, once per dialect; its parameters
and results still pass through the column types' own bind and result processors (datetimes
stored as SQLite text, JSON, booleans), so the database holds exactly what Core execution
stores. Only the per-call machinery is skipped:

- it runs inside the connection's current transaction (the caller's session began it);
- driver errors are raised as SQLAlchemy's exceptions (:class:`sqlalchemy.exc.IntegrityError`
  and the rest), or as ``DatabaseUnavailable`` for an outage, so callers catch the same thing
  as with ``Connection.execute``;
- it runs through the dialect's ``do_execute``/``do_executemany``, so a hung server's round
  trips are broken as those of ``Connection.execute`` (see ``manager.db.outages``);
- connection events (``before_cursor_execute``) do not fire for it.

Not for statements that need per-call compilation: expanding ``IN`` parameters, or inserts
that leave a column with a Python-side default to be filled in (every key must be given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from manager.core.errors import DatabaseUnavailable
from manager.db.outages import as_unavailable

Processor = Callable[[Any], Any] | None
_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class _Form:
    """A statement compiled for one dialect: its SQL and how to pass values in and out."""

    sql: str
    #: Parameter names, in placeholder order for positional drivers.
    names: tuple[str, ...]
    positional: bool
    binds: tuple[Processor, ...]
    #: Values of parameters bound in the statement itself (a ``LIMIT``), else ``_REQUIRED``.
    fixed: tuple[Any, ...]
    #: One processor per result column; empty when the statement returns no rows.
    results: tuple[Processor, ...]
    #: (name, processor, fixed value) per parameter, zipped once: ``_values`` runs per row.
    plan: tuple[tuple[str, Processor, Any], ...] = ()


class Prepared:
    """A Core statement compiled once per dialect and run on the DBAPI cursor.

    ``keys`` names the columns an ``INSERT`` or ``UPDATE`` without explicit ``values()`` sets
    (as the keys of the parameter dicts passed to ``Connection.execute`` would).
    """

    __slots__ = ("_forms", "keys", "statement")

    def __init__(self, statement: ClauseElement, *, keys: Sequence[str] = ()) -> None:
        self.statement = statement
        self.keys = tuple(keys)
        self._forms: dict[tuple[str, str], _Form] = {}

    def _form(self, dialect: Dialect) -> _Form:
        key = (dialect.name, dialect.driver)
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = _compile(self.statement, self.keys, dialect)
        return form

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with one set of parameters; every row returned (none for plain DML)."""
        form, fetched = self._execute(conn, [params], many=False, fetch=True)
        if not any(form.results):
            return [tuple(row) for row in fetched]
        return [
            tuple(
                value if p is None else p(value) for p, value in zip(form.results, row, strict=True)
            )
            for row in fetched
        ]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row returned, or ``None``."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or ``None``."""
        row = self.first(conn, params)
        return None if row is None else row[0]

    def run(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Execute with one set of parameters, ignoring any rows."""
        self._execute(conn, [params], many=False, fetch=False)

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (``executemany``), ignoring any rows."""
        if params:
            self._execute(conn, params, many=True, fetch=False)

    def bind_many(self, dialect: Dialect, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Each parameter set's DBAPI values, as :meth:`run_many` binds them: bound ahead of
        the transaction that runs them (:meth:`run_bound`, same dialect)."""
        form = self._form(dialect)
        return [_values(form, each) for each in params]

    def bound_slot(self, dialect: Dialect, name: str) -> tuple[int | str, Processor]:
        """Where parameter ``name`` sits in a value set of :meth:`bind_many` (an index or a
        key) and its bind processor: to set it in bound values later."""
        form = self._form(dialect)
        i = form.names.index(name)
        return (i if form.positional else name), form.binds[i]

    def run_bound(self, conn: Connection, values: Sequence[Any]) -> None:
        """:meth:`run_many` with values from :meth:`bind_many`."""
        if values:
            self._execute(conn, values, many=True, fetch=False, bound=True)

    def count_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Execute once per parameter set; the number of rows changed in all."""
        if not params:
            return 0
        counted: list[int] = []
        self._execute(conn, params, many=True, fetch=False, counted=counted)
        return counted[0]

    def rows_on(
        self, dbapi_connection: Any, dialect: Dialect, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Execute on a bare DBAPI connection in autocommit mode (one statement, one snapshot).

        For reads on a hot path that need no transaction (see ``Database.autocommit_rows``).
        """
        form = self._form(dialect)
        cursor = dbapi_connection.cursor()
        values = _values(form, params)
        try:
            dialect.do_execute(cursor, form.sql, values)
            fetched = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            outage = as_unavailable(exc, dialect, disconnect=False)
            if outage is not None:
                raise outage from exc
            raise DBAPIError.instance(
                form.sql, values, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc
        finally:
            cursor.close()
        return [
            tuple(
                value if p is None else p(value) for p, value in zip(form.results, row, strict=True)
            )
            for row in fetched
        ]

    def _execute(
        self,
        conn: Connection,
        params: Sequence[Mapping[str, Any]],
        *,
        many: bool,
        fetch: bool,
        counted: list[int] | None = None,
        bound: bool = False,
    ) -> tuple[_Form, list[Any]]:
        """Run on a fresh cursor of the connection; (the form, the raw rows when fetched)."""
        form = self._form(conn.dialect)
        cursor = _cursor(conn)
        values: Any
        if bound:
            values = params
        elif many:
            values = _values_many(form, params)
        else:
            values = _values(form, params[0])
        try:
            if many:
                conn.dialect.do_executemany(cursor, form.sql, values)
            else:
                conn.dialect.do_execute(cursor, form.sql, values)
            fetched = cursor.fetchall() if fetch and form.results else []
            if counted is not None:
                counted.append(cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, cursor, form, values, exc) from exc
        finally:
            cursor.close()
        return form, fetched


def _compile(statement: ClauseElement, keys: tuple[str, ...], dialect: Dialect) -> _Form:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys) or None)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("Prepared statements cannot have expanding or literal parameters.")
    if compiled.insert_prefetch or compiled.update_prefetch:
        missing = ", ".join(c.key for c in [*compiled.insert_prefetch, *compiled.update_prefetch])
        raise ValueError(f"Prepared statement leaves columns to their defaults: {missing}.")
    names = tuple(compiled.positiontup) if dialect.positional else tuple(compiled.binds)
    params = [compiled.binds[name] for name in names]
    binds = tuple(p.type.dialect_impl(dialect).bind_processor(dialect) for p in params)
    fixed = tuple(_REQUIRED if p.required else p.effective_value for p in params)
    columns = list(getattr(statement, "exported_columns", ()))
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    plan = tuple(zip(names, binds, fixed, strict=True))
    return _Form(compiled.string, names, dialect.positional, binds, fixed, results, plan)


def _values(form: _Form, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
    values = []
    for name, process, fixed in form.plan:
        value = params[name] if fixed is _REQUIRED or name in params else fixed
        values.append(value if process is None else process(value))
    if form.positional:
        return values
    return dict(zip(form.names, values, strict=True))


def _values_many(form: _Form, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """:func:`_values` of many rows, column by column: each column's lookups and bind
    processor run in one comprehension instead of one Python step per row and column (an
    initial sync writes 10^5 rows into each of four tables)."""
    columns: list[Sequence[Any]] = []
    for name, process, fixed in form.plan:
        if fixed is _REQUIRED:
            column: Sequence[Any] = [row[name] for row in rows]
        else:
            column = [row.get(name, fixed) for row in rows]
        columns.append(column if process is None else _processed(process, column))
    if not columns:
        return [[] if form.positional else {} for _ in rows]
    if form.positional:
        return list(zip(*columns, strict=True))  # tuples: a DBAPI parameter sequence
    return [dict(zip(form.names, values, strict=True)) for values in zip(*columns, strict=True)]


def _processed(process: Callable[[Any], Any], column: Sequence[Any]) -> list[Any]:
    """The column's values through its bind processor; once when every row has the same value
    (a batch's rows share their timestamps: a datetime's bind costs more than the comparisons)."""
    first = column[0] if column else None
    if column and all(value == first for value in column):
        return [process(first)] * len(column)
    return [process(value) for value in column]


def _cursor(conn: Connection) -> Any:
    if not conn.in_transaction():
        raise RuntimeError("Prepared statements run inside a transaction the caller began.")
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _wrapped(
    conn: Connection, cursor: Any, form: _Form, values: Any, exc: Any
) -> DBAPIError | DatabaseUnavailable:
    """The driver's error as SQLAlchemy raises it (``IntegrityError``, ``OperationalError``…),
    or the outage it stands for, as the engine raises it.

    A lost connection is invalidated, as ``Connection.execute`` does: the pool replaces it
    instead of handing the dead one out again.
    """
    dialect = conn.dialect
    lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(exc)
    outage = as_unavailable(exc, dialect, disconnect=lost)
    if outage is not None:
        return outage
    error: DBAPIError = DBAPIError.instance(
        form.sql,
        values,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return error


__all__ = ["Prepared"]
