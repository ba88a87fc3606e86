"""Inserting many rows at once, where Core's own executemany costs more than the insert: the batch push's
new invoices and their timeline entries (a thousand a request), and seeding large data sets
(bench/portal_history.py).

`Connection.execute(table.insert(), rows)` assembles every row's parameters in Python, one dictionary and
one type conversion per value. `insert_many` sends the same INSERT as one DBAPI executemany instead. Every
value still goes through its column type's own bind processor, so what is stored is exactly what Core would
store; only the per-row bookkeeping goes (measured: Core's executemany of a batch's 1,000 invoices took
more CPU than the rest of the push's writes together).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


def insert_many(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` into `table` in one executemany. Every row must have the same keys, all of them
    columns of `table`; columns left out get their server default, as with Core."""
    if not rows:
        return
    sql, params = _statement_and_params(conn.dialect, table, rows)
    conn.exec_driver_sql(sql, params)


def insert_new_many(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
                    unique: Sequence[str], returning: Sequence[str]) -> list[tuple[Any, ...]]:
    """PostgreSQL: as `insert_many`, but a row whose `unique` columns are taken is left out (`ON CONFLICT DO
    NOTHING`: one that a concurrent transaction inserts first is waited for, then left out); the `returning`
    columns of the rows inserted. One pipelined executemany (psycopg's `returning=True`)."""
    if not rows:
        return []
    sql, params = _statement_and_params(conn.dialect, table, rows, (tuple(unique), tuple(returning)))
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, params, returning=True)  # type: ignore[call-arg]  # a psycopg keyword (not in the DB-API)
        inserted: list[tuple[Any, ...]] = []
        while True:
            inserted.extend(cursor.fetchall())
            if not cursor.nextset():
                return inserted
    finally:
        cursor.close()


def _statement_and_params(dialect: Dialect, table: sa.Table, rows: Sequence[Mapping[str, Any]],
                          new_only: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> tuple[str, list[Any]]:
    keys = tuple(rows[0])
    sql, names, positional = _compiled_insert(dialect, table, keys, new_only)
    columns = [tuple(map(operator.itemgetter(name), rows)) for name in names]
    for at, convert in _converters(dialect, table, names):
        columns[at] = tuple(map(convert, columns[at]))
    params: list[Any] = list(zip(*columns, strict=True))
    if not positional:
        params = [dict(zip(names, values, strict=True)) for values in params]
    return sql, params


@functools.lru_cache(maxsize=64)
def _compiled_insert(dialect: Dialect, table: sa.Table, keys: tuple[str, ...],
                     new_only: tuple[tuple[str, ...], tuple[str, ...]] | None) -> tuple[str, tuple[str, ...], bool]:
    """The INSERT as Core compiles it for an executemany of rows with `keys`, and its parameter names.
    `new_only`: (unique columns, returned columns) of a PostgreSQL `INSERT ... ON CONFLICT DO NOTHING`."""
    statement: Any = table.insert()
    if new_only is not None:
        unique, returning = new_only
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(unique)).returning(
            *(table.c[name] for name in returning))
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    unknown = set(names) - set(keys)
    if unknown:
        # A column with a Python-side default would need SQLAlchemy to fill it in; this helper does not.
        raise ValueError(f"insert_many cannot fill {sorted(unknown)} of {table.name}")
    return compiled.string, names, compiled.positional


def _converters(dialect: Dialect, table: sa.Table, names: Sequence[str]) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, converter) of each parameter whose column type converts values before they are bound."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for at, name in enumerate(names):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found.append((at, process))
    return found
