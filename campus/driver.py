"""Core statements run straight on the database driver, for the payment path.

Every wallet payment runs the same eight statements. Through SQLAlchemy's
``Connection.execute`` each costs about 80 µs of the interpreter on the
development machine, for 15 µs of the driver's own work: the cache key, the
execution context, the result object. A ``DriverStatement`` keeps SQLAlchemy's
statement (so the SQL is still written once, in Core, for both PostgreSQL and
SQLite) and its type handling, but runs it on the driver's cursor, in the
transaction of the SQLAlchemy ``Connection`` it is given:

* compiled once per dialect (and, for an INSERT, per set of columns given);
* parameters processed by their types as SQLAlchemy would (enums to their values,
  aware times to what the backend stores), and an INSERT's columns with a plain
  Python default filled in; a column whose default must be computed has to be
  given (``MissingValue``);
* rows returned as the driver gives them, with no result processing: only for
  columns the driver already returns as they should be (integers, text, booleans);
* the driver's errors handled by SQLAlchemy as for its own statements
  (``IntegrityError`` and the rest; a lost connection and the pool's older ones
  invalidated), so that callers and the pool see what they would;
* a statement for which SQLAlchemy would add values of its own at execution
  (defaults of a multi-row INSERT, ``onupdate``) refused, as is one that renders
  at execution (expanding ``IN``).

SQLAlchemy's events for cursor execution do not fire for these statements, and
its echo does not log them. Errors go through ``Connection._handle_dbapi_exception``,
SQLAlchemy's own but private: pyproject keeps SQLAlchemy below 2.2, and a newer one
must be checked against it (``tests/campus/test_driver.py`` loses a connection on
purpose).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert, Update


class MissingValue(ValueError):
    """An INSERT was not given a column whose default must be computed."""


@dataclasses.dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    """Each bind's name and its type's processor, in the order of ``positional``."""
    literals: Mapping[str, Any]
    """Values the statement carries itself (``bindparam(value=…)``)."""
    positional: bool
    defaults: Mapping[str, Any]
    """An INSERT's columns with a plain default, and the default."""
    placeholders: tuple[str, ...]
    """Each bind's name as the SQL writes it, where the driver takes names."""


class DriverStatement:
    """``statement`` run on the driver's cursor (see the module's description)."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[tuple[str, frozenset[str] | None], _Compiled] = {}

    def first(
        self, connection: Connection, parameters: Mapping[str, Any] | None = None
    ) -> tuple[Any, ...] | None:
        """The first row, or None."""
        row: tuple[Any, ...] | None = self._run(
            connection, parameters or {}, lambda cursor: cursor.fetchone()
        )
        return row

    def scalar(
        self, connection: Connection, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        """The first column of the first row, or None."""
        row = self.first(connection, parameters)
        return None if row is None else row[0]

    def execute(
        self, connection: Connection, parameters: Mapping[str, Any] | None = None
    ) -> None:
        self._run(connection, parameters or {}, lambda cursor: None)

    def _run(
        self,
        connection: Connection,
        parameters: Mapping[str, Any],
        fetch: Callable[[Any], Any],
    ) -> Any:
        compiled = self._compiled_for(connection.dialect, parameters)
        return self._call(connection, compiled, _values(compiled, parameters), fetch)

    def _call(
        self,
        connection: Connection,
        compiled: _Compiled,
        values: Any,
        fetch: Callable[[Any], Any],
    ) -> Any:
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, values)
            return fetch(cursor)
        except BaseException as error:
            # SQLAlchemy's own handling, as for a statement it ran: the error
            # wrapped (IntegrityError and the rest), a lost connection and the
            # pool's older ones invalidated, the handle_error event.
            connection._handle_dbapi_exception(
                error, compiled.sql, values, cursor, None
            )
        finally:
            cursor.close()

    def _compiled_for(
        self, dialect: Dialect, parameters: Mapping[str, Any]
    ) -> _Compiled:
        # An INSERT of given columns compiles for the columns given; one that
        # sets its own rows (``.values([...])``) compiles as it is.
        insert = isinstance(self._statement, Insert)
        keys = (
            frozenset(parameters)
            if insert and not self._statement._multi_values
            else None
        )
        key = (dialect.name, keys)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _compile(self._statement, dialect, keys)
        return compiled


def _compile(
    statement: Executable, dialect: Dialect, keys: frozenset[str] | None
) -> _Compiled:
    defaults: dict[str, Any] = {}
    columns: list[str] | None = None
    _no_hidden_defaults(statement)
    if keys is not None:
        assert isinstance(statement, Insert)
        # Columns the statement sets itself (``.values(…)``) need nothing.
        own = {getattr(key, "key", key) for key in statement._values or {}}
        given = {column.key for column in statement.table.columns} & keys
        for column in statement.table.columns:
            if column.key in given or column.key in own or column.default is None:
                continue
            if column.default.is_scalar:
                defaults[column.key] = column.default.arg  # type: ignore[attr-defined]
            elif not column.primary_key:
                raise MissingValue(f"{statement.table.name}.{column.key}")
        columns = sorted(given | set(defaults))
    compiled = statement.compile(dialect=dialect, column_keys=columns)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError(f"not for the driver, it renders at execution: {compiled}")
    names = compiled.positiontup if compiled.positional else list(compiled.binds)
    escaped = compiled.escaped_bind_names or {}
    binds = tuple(
        (name, compiled.binds[name].type._cached_bind_processor(dialect))
        for name in names or ()
    )
    literals = {
        name: bind.value for name, bind in compiled.binds.items() if not bind.required
    }
    return _Compiled(
        compiled.string,
        binds,
        literals,
        bool(compiled.positional),
        defaults,
        tuple(escaped.get(name, name) for name, _ in binds),
    )


def _no_hidden_defaults(statement: Executable) -> None:
    """Refuse a statement for which SQLAlchemy would add values of its own when it
    runs it: the defaults of the columns a multi-row INSERT leaves out, and an
    UPDATE's ``onupdate`` columns. Here they would go in as NULL."""
    if isinstance(statement, Insert) and statement._multi_values:
        given = {getattr(key, "key", key) for key in statement._multi_values[0][0]}
        for column in statement.table.columns:
            if column.default is not None and column.key not in given:
                if not column.primary_key:
                    raise MissingValue(f"{statement.table.name}.{column.key}")
    if isinstance(statement, Update):
        given = {getattr(key, "key", key) for key in statement._values or {}}
        for column in statement.table.columns:
            if column.onupdate is not None and column.key not in given:
                raise MissingValue(f"{statement.table.name}.{column.key} (onupdate)")


def _values(compiled: _Compiled, parameters: Mapping[str, Any]) -> Any:
    values = []
    for name, process in compiled.binds:
        if name in parameters:
            value = parameters[name]
        elif name in compiled.defaults:
            value = compiled.defaults[name]
        elif name in compiled.literals:
            value = compiled.literals[name]
        else:
            raise MissingValue(name)
        values.append(process(value) if process is not None else value)
    if compiled.positional:
        return tuple(values)
    return dict(zip(compiled.placeholders, values, strict=True))
