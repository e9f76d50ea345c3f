"""The sink's work in its bridge thread: one transaction per batch, COPY (append) or COPY
into a staging table then ``INSERT ... ON CONFLICT (key) DO UPDATE`` (upsert).

A batch is first tried whole. If the server refuses a row (a constraint, a value of the
wrong type, one key twice in a way only the server sees) the transaction is rolled back and
the batch is written again, in one transaction, bisected under savepoints: each half is tried
under its own savepoint, a refused half is rolled back to it and split again, down to the
single rows the server refuses. The others commit together; the refused rows are returned
with the server's error (the sink raises them as ``RejectedItems``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import JsonbDumper, set_json_dumps

from .connection import (
    MissingUniqueKeyError,
    PostgresError,
    TableInfo,
    check_columns,
    close_quietly,
    connect,
    describe_table,
)
from .rows import Getter, RowMaker

#: SQLSTATE classes of errors caused by the rows themselves: 22 data exception (bad value,
#: out of range), 23 integrity constraint (unique, not null, check, foreign key), 21
#: cardinality (an upsert touching one row twice).
ROW_ERROR_CLASSES = ("21", "22", "23")

#: Errors after which the connection is to be dropped and the batch written again.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def is_row_error(error: BaseException) -> bool:
    if isinstance(error, psycopg.Error):
        if error.sqlstate is None:  # raised by psycopg itself: a value it cannot adapt
            return isinstance(error, psycopg.ProgrammingError | psycopg.DataError)
        return error.sqlstate[:2] in ROW_ERROR_CLASSES
    return isinstance(error, TypeError | ValueError)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class BatchWriter:
    """Owns the sink's connection; every method runs in the sink's bridge thread."""

    def __init__(
        self,
        dsn: str,
        schema: str | None,
        table: str,
        mode: str,
        key: tuple[str, ...],
        columns: dict[str, Getter] | None,
        connect_timeout: float,
        statement_timeout: float,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.table_name = table
        self.mode = mode
        self.key = key
        self.columns_setting = columns
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.connection: psycopg.Connection[Any] | None = None
        self.table: TableInfo | None = None
        self.maker: RowMaker | None = None
        self._stage = sql.Identifier(f"haive_stage_{secrets.token_hex(4)}")
        self._copy: sql.Composed | None = None
        self._merge: sql.Composed | None = None
        self._clear: sql.Composed | None = None

    # -- connection -------------------------------------------------------------------
    def open(self) -> TableInfo:
        """Connect, check the table, columns and key; prepare the statements."""
        connection = self._connect()
        try:
            table = describe_table(connection, self.schema, self.table_name)
            getters = self.columns_setting or {column: column for column in table.columns}
            check_columns(table, list(getters), "column")
            if self.key:
                check_columns(table, self.key, "key column")
                missing = [k for k in self.key if k not in getters]
                if missing:
                    raise PostgresError(
                        f"key column {', '.join(map(repr, missing))} is not among the columns "
                        f"written ({', '.join(getters)}): an upsert needs the key's values"
                    )
                if frozenset(self.key) not in table.unique_keys:
                    raise MissingUniqueKeyError(
                        f"table {table.qualified} has no unique constraint or unique index on "
                        f"exactly ({', '.join(self.key)}), which INSERT ... ON CONFLICT needs: "
                        f"add one (ALTER TABLE {table.qualified} ADD UNIQUE "
                        f"({', '.join(self.key)})) or write with mode='copy'"
                    )
            self.table = table
            self.maker = RowMaker(getters)
            self._prepare(table, self.maker.columns)
            self._create_stage(connection)
        except BaseException:
            self.close()
            raise
        return table

    def _connect(self) -> psycopg.Connection[Any]:
        connection = connect(self.dsn, autocommit=False, connect_timeout=self.connect_timeout,
                             application_name="haive-postgres-sink")
        set_json_dumps(_dumps, context=connection)
        # dict values go to json/jsonb columns (psycopg wants them wrapped otherwise).
        connection.adapters.register_dumper(dict, JsonbDumper)
        connection.execute("SELECT set_config('statement_timeout', %s, false)",
                           (f"{int(self.statement_timeout * 1000)}ms",))
        connection.commit()
        self.connection = connection
        return connection

    def _create_stage(self, connection: psycopg.Connection[Any]) -> None:
        if self.mode != "upsert":
            return
        assert self.table is not None and self.maker is not None
        columns = sql.SQL(", ").join(map(sql.Identifier, self.maker.columns))
        connection.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} "
                    "WITH NO DATA").format(self._stage, columns, self.table.identifier)
        )
        connection.execute(sql.SQL("ALTER TABLE {} ADD COLUMN haive_seq bigint")
                           .format(self._stage))
        connection.commit()

    def _prepare(self, table: TableInfo, columns: Sequence[str]) -> None:
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        if self.mode == "copy":
            self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(table.identifier, names)
            return
        self._copy = sql.SQL("COPY {} ({}, haive_seq) FROM STDIN").format(self._stage, names)
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        others = [c for c in columns if c not in self.key]
        action: sql.Composable
        if others:
            action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others
            )
        else:
            action = sql.SQL("DO NOTHING")
        # DISTINCT ON keeps the last row of each key in the batch (the latest write wins, as
        # it would one batch at a time); ON CONFLICT cannot touch one row twice.
        self._merge = sql.SQL(
            "INSERT INTO {table} ({names}) SELECT DISTINCT ON ({keys}) {names} FROM {stage} "
            "ORDER BY {keys}, haive_seq DESC ON CONFLICT ({keys}) {action}"
        ).format(table=table.identifier, names=names, keys=keys, stage=self._stage,
                 action=action)
        self._clear = sql.SQL("TRUNCATE {}").format(self._stage)

    def reconnect(self) -> None:
        """A new connection after the old one broke (the server restarting)."""
        close_quietly(self.connection)
        self.connection = None
        self._create_stage(self._connect())

    def close(self) -> None:
        close_quietly(self.connection)
        self.connection = None

    # -- writing ----------------------------------------------------------------------
    def write(self, items: list[Any]) -> tuple[int, dict[int, BaseException]]:
        """Write ``items`` in one transaction; returns (rows written, index -> error of
        the items not written)."""
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            self.reconnect()
            connection = self.connection
        assert connection is not None and self.maker is not None
        rejected: dict[int, BaseException] = {}
        make = self.maker.row
        indexes: Sequence[int]
        try:
            rows = list(map(make, items))  # the usual case: every item makes a row
            indexes = range(len(rows))
        except Exception:
            rows, indexes = [], []
            for index, item in enumerate(items):
                try:
                    rows.append(make(item))
                except Exception as error:
                    rejected[index] = error
                    continue
                indexes.append(index)
        if not rows:
            return 0, rejected
        try:
            with connection.cursor() as cursor:
                self._load(cursor, rows, 0)
            connection.commit()
            return len(rows), rejected
        except BaseException as error:
            if connection.closed or connection.broken or not is_row_error(error):
                _rollback(connection)
                raise
            connection.rollback()
        refused: dict[int, BaseException] = {}
        try:
            with connection.cursor() as cursor:
                self._bisect(cursor, rows, 0, len(rows), refused)
            connection.commit()
        except BaseException:
            _rollback(connection)  # nothing of the batch is written; the caller may retry
            raise
        for position, refusal in refused.items():
            rejected[indexes[position]] = refusal
        return len(rows) - len(refused), rejected

    def _load(self, cursor: psycopg.Cursor[Any], rows: list[tuple[Any, ...]], base: int) -> None:
        assert self._copy is not None
        with cursor.copy(self._copy) as copy:
            write_row = copy.write_row
            if self.mode == "copy":
                for row in rows:
                    write_row(row)
            else:
                for seq, row in enumerate(rows, base):
                    write_row((*row, seq))
        if self.mode == "upsert":
            assert self._merge is not None
            cursor.execute(self._merge)

    def _bisect(self, cursor: psycopg.Cursor[Any], rows: list[tuple[Any, ...]], start: int,
                stop: int, refused: dict[int, BaseException]) -> None:
        cursor.execute("SAVEPOINT haive_rows")
        try:
            self._load(cursor, rows[start:stop], start)
            if self._clear is not None:
                cursor.execute(self._clear)  # the next part is merged on its own
        except Exception as error:
            if not is_row_error(error):
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT haive_rows")
            cursor.execute("RELEASE SAVEPOINT haive_rows")
            if stop - start == 1:
                refused[start] = error
                return
            middle = (start + stop) // 2
            self._bisect(cursor, rows, start, middle, refused)
            self._bisect(cursor, rows, middle, stop, refused)
            return
        cursor.execute("RELEASE SAVEPOINT haive_rows")


def _rollback(connection: psycopg.Connection[Any]) -> None:
    if connection.closed or connection.broken:
        close_quietly(connection)
        return
    try:
        connection.rollback()
    except psycopg.Error:
        close_quietly(connection)
