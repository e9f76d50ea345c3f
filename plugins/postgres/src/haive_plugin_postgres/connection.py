"""Connecting to PostgreSQL: the connection string, errors, and what the server's catalog
says about a table.

Everything here that talks to the server is synchronous psycopg and runs in the calling
source's or sink's :class:`~haive.dataflow.runtime.bridge.ThreadBridge` thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from haive.dataflow.errors import ConfigError, HaiveError

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class PostgresError(HaiveError):
    """Something PostgreSQL refused or could not do, with what to change."""


class PostgresConnectError(PostgresError):
    """The server did not answer, or refused the connection (credentials, database)."""


class UnknownTableError(PostgresError, LookupError):
    """The table does not exist (or is not visible to the connecting user)."""


class UnknownColumnError(PostgresError, LookupError):
    """A column named in the settings is not one of the table's."""


class MissingUniqueKeyError(PostgresError):
    """An upsert key without a unique constraint (or unique index) on exactly its columns."""


def check_dsn(owner: str, dsn: object) -> str:
    """``dsn`` if it is a libpq connection string or URL psycopg understands.

    Example::

        >>> check_dsn("PostgresSink", "postgresql://u@db:5432/app")
        'postgresql://u@db:5432/app'
        >>> check_dsn("PostgresSink", "host=db port")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: PostgresSink(dsn='<unparsable dsn>'): dsn must be a libpq connection string or postgresql:// URL (missing "=" after "port" in connection info string), got '<unparsable dsn>'

    A string that does not parse is not shown: it may hold a password.
    """
    if not isinstance(dsn, str) or not dsn:
        raise ConfigError(
            f"{owner}(dsn={dsn!r}): dsn must be a non-empty connection string, got {dsn!r}"
        )
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise ConfigError(
            f"{owner}(dsn={redacted(dsn)!r}): dsn must be a libpq connection string or "
            f"postgresql:// URL ({str(error).strip()}), got {redacted(dsn)!r}"
        ) from None
    return dsn


def redacted(dsn: str) -> str:
    """The connection string with its password hidden, for messages and ``repr``.

    Example::

        >>> redacted("postgresql://app:s3cret@db/app")
        'user=app password=*** dbname=app host=db'
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    if "password" not in params:
        return dsn
    params["password"] = "***"
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def check_identifier(owner: str, parameter: str, value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(
            f"{owner}({parameter}={value!r}): {parameter} must be a non-empty name, got {value!r}"
        )
    return value


def split_table(owner: str, parameter: str, table: object) -> tuple[str | None, str]:
    """``"schema.table"`` or ``"table"`` -> (schema or None, table). Names are taken as
    written (case-sensitive, as if double-quoted); a dot inside a name is not supported."""
    name = check_identifier(owner, parameter, table)
    parts = name.split(".")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"{owner}({parameter}={table!r}): {parameter} must be 'table' or 'schema.table', "
            f"got {table!r}"
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def connect(dsn: str, *, autocommit: bool, connect_timeout: float,
            application_name: str) -> psycopg.Connection[Any]:
    """A new connection (blocking: call it through the bridge)."""
    try:
        return psycopg.Connection.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=max(1, round(connect_timeout)),
            application_name=application_name,
        )
    except psycopg.OperationalError as error:
        raise PostgresConnectError(
            f"cannot connect to PostgreSQL at {redacted(dsn)}: {str(error).strip()}"
        ) from error


def close_quietly(connection: psycopg.Connection[Any] | None) -> None:
    if connection is not None:
        try:
            connection.close()
        except psycopg.Error:
            pass  # a broken connection is closed anyway


@attrs.frozen
class TableInfo:
    """A table as the catalog describes it: its qualified name, columns in order (generated
    columns left out: they cannot be written), and the column sets of its unique
    constraints and unique indexes (the primary key included)."""

    schema: str
    name: str
    columns: tuple[str, ...]
    unique_keys: tuple[frozenset[str], ...]
    replica_identity: str  # 'd' default, 'f' full, 'i' index, 'n' nothing

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


_TABLE_QUERY = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(name)s AND c.relkind IN ('r', 'p')
  AND (n.nspname = %(schema)s
       OR (%(schema)s IS NULL AND n.nspname = ANY (current_schemas(false))))
ORDER BY array_position(current_schemas(false), n.nspname::text)
LIMIT 1
"""

_COLUMNS_QUERY = """
SELECT attname FROM pg_attribute
WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
ORDER BY attnum
"""

_UNIQUE_QUERY = """
SELECT array_agg(a.attname::text)
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""


def describe_table(connection: psycopg.Connection[Any], schema: str | None,
                   name: str) -> TableInfo:
    """The catalog's description of a table; :class:`UnknownTableError` if there is none."""
    with connection.cursor() as cursor:
        row = cursor.execute(_TABLE_QUERY, {"schema": schema, "name": name}).fetchone()
        if row is None:
            where = f"schema {schema!r}" if schema else "the search_path"
            raise UnknownTableError(
                f"no table {name!r} in {where} of the database (create it first; names are "
                "case-sensitive as written)"
            )
        oid, found_schema, found_name, identity = row
        columns = tuple(r[0] for r in cursor.execute(_COLUMNS_QUERY, (oid,)).fetchall())
        keys = tuple(frozenset(r[0]) for r in cursor.execute(_UNIQUE_QUERY, (oid,)).fetchall())
    if not connection.autocommit:
        connection.rollback()  # end the catalog reads' transaction
    return TableInfo(found_schema, found_name, columns, keys, identity)


def check_columns(table: TableInfo, wanted: Sequence[str], what: str) -> None:
    unknown = [column for column in wanted if column not in table.columns]
    if unknown:
        raise UnknownColumnError(
            f"{what} {', '.join(map(repr, unknown))} not in table {table.qualified} "
            f"(its writable columns: {', '.join(table.columns)})"
        )
