"""PostgreSQL sink: a batch per transaction, by COPY (append) or COPY + upsert on a key.

Each ``write_batch`` is one crossing of the sink's
:class:`~haive.dataflow.runtime.bridge.ThreadBridge`, where psycopg writes the batch in one
transaction (see :mod:`haive_plugin_postgres.writing`) and commits before the call returns,
so an at-least-once source acknowledges only what is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.runtime.bridge import ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.validation import duration, one_of

from .connection import (
    DEFAULT_DSN,
    PostgresConnectError,
    PostgresError,
    check_dsn,
    check_identifier,
    redacted,
    split_table,
)
from .rows import check_columns_setting
from .writing import CONNECTION_ERRORS, BatchWriter

DEFAULT_RETRY = RetryPolicy(attempts=8, backoff=0.1, max_backoff=5.0)
MODES = ("upsert", "copy")


class PostgresWriteError(PostgresError):
    """A batch could not be written after every retry (the server stayed away)."""


@attrs.define
class PostgresSinkStats:
    """What a :class:`PostgresSink` did."""

    written: int = 0  # rows committed (an upserted row counts once per write)
    rejected: int = 0  # items the server refused (or that made no row), raised as RejectedItems
    batches: int = 0  # transactions committed
    retries: int = 0  # batches written again after the connection broke (on a new one)


class PostgresSink(StreamSink):
    """Writes items as rows of ``table``, one transaction per batch.

    ``mode="upsert"`` (the default when ``key`` is given): the batch is COPied into a
    temporary staging table, then ``INSERT ... ON CONFLICT (key) DO UPDATE`` moves it into
    the table, so writing the same items again (a replay after a crash) changes nothing.
    ``key`` (a column or a tuple of columns) must have a unique constraint or index. Within a
    batch the last item of each key wins. ``mode="copy"`` (the default without ``key``): a
    plain ``COPY`` for append-only tables, the fastest way into PostgreSQL; a replay appends
    again.

    ``columns``: the columns written, each read from the item's field of the same name (a
    dict's key, an attrs instance's attribute), or a mapping of column to a field name or a
    function of the item; by default every column of the table. A dict without a field
    gives NULL, so name the columns to let the table's defaults fill the others.

    A row the server refuses (constraint, value of the wrong type) does not fail the batch:
    the rows around it are committed and ``write_batch`` raises
    :class:`~haive.dataflow.io.sinks.RejectedItems` naming it with the server's error, which
    the pipeline sends to its dead-letter sink. A broken connection (the server restarting)
    is re-opened and the whole batch written again, with ``retry``'s backoff.

    Example::

        >>> import trio, psycopg
        >>> with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test",
        ...                      autocommit=True) as admin:
        ...     _ = admin.execute("DROP TABLE IF EXISTS doc_users")
        ...     _ = admin.execute("CREATE TABLE doc_users (id int PRIMARY KEY, name text)")
        >>> async def main():
        ...     async with PostgresSink("doc_users", key="id",
        ...                             dsn="postgresql://postgres@127.0.0.1:5432/test") as sink:
        ...         await sink.write_batch([{"id": 1, "name": "ada"}, {"id": 2, "name": "bo"}])
        ...         await sink.write_batch([{"id": 1, "name": "ada l."}])   # an update
        ...     return sink.stats.written
        >>> trio.run(main)
        3
        >>> with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test",
        ...                      autocommit=True) as admin:
        ...     print(admin.execute("SELECT id, name FROM doc_users ORDER BY id").fetchall())
        ...     _ = admin.execute("DROP TABLE doc_users")
        [(1, 'ada l.'), (2, 'bo')]
    """

    PLUGIN_NAME = "postgres"

    def __init__(
        self,
        table: str,
        *,
        dsn: str = DEFAULT_DSN,
        key: str | Sequence[str] | None = None,
        mode: str | None = None,
        columns: Sequence[str] | Mapping[str, str | Callable[[Any], Any]] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        connect_timeout: Any = "10s",
        statement_timeout: Any = "60s",
    ) -> None:
        owner = "PostgresSink"
        self.schema, self.table = split_table(owner, "table", table)
        self.dsn = check_dsn(owner, dsn)
        if key is None:
            keys: tuple[str, ...] = ()
        elif isinstance(key, str):
            keys = (check_identifier(owner, "key", key),)
        elif isinstance(key, Sequence) and key and all(isinstance(k, str) and k for k in key):
            keys = tuple(key)
        else:
            raise ConfigError(f"{owner}(key={key!r}): key must be a column name or a sequence "
                              f"of column names, got {key!r}")
        if mode is None:
            mode = "upsert" if keys else "copy"
        one_of(*MODES).check(owner, "mode", mode)
        if mode == "upsert" and not keys:
            raise ConfigError(f"{owner}(mode='upsert'): mode 'upsert' needs key= (the "
                              "conflict columns), got key=None")
        if mode == "copy" and keys:
            raise ConfigError(f"{owner}(key={key!r}): key must be None with mode='copy' "
                              "(plain COPY appends; use mode='upsert' to write on a key), "
                              f"got {key!r}")
        self.mode = mode
        self.key = keys
        self.columns = check_columns_setting(owner, columns)
        if not isinstance(retry, RetryPolicy):
            raise ConfigError(f"{owner}(retry={retry!r}): retry must be a RetryPolicy, "
                              f"got {retry!r}")
        self.retry = retry
        self.connect_timeout = duration(owner, "connect_timeout", connect_timeout)
        self.statement_timeout = duration(owner, "statement_timeout", statement_timeout)
        self.stats = PostgresSinkStats()
        self._exit = AsyncExitStack()
        self._bridge: ThreadBridge | None = None
        self._writer: BatchWriter | None = None

    def __repr__(self) -> str:
        table = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"PostgresSink({table!r}, mode={self.mode!r}, dsn={redacted(self.dsn)!r})"

    async def open(self) -> None:
        self.stats = PostgresSinkStats()
        bridge = await self._exit.enter_async_context(
            open_thread_bridge(name=f"postgres-sink-{self.table}")
        )
        self._bridge = bridge
        writer = BatchWriter(self.dsn, self.schema, self.table, self.mode, self.key,
                             self.columns, self.connect_timeout, self.statement_timeout)
        self._exit.push_async_callback(bridge.run, writer.close)
        try:
            await bridge.run(writer.open)
        except BaseException:
            await self.aclose()
            raise
        self._writer = writer

    async def aclose(self) -> None:
        self._bridge = None
        self._writer = None
        await self._exit.aclose()

    async def write_batch(self, items: list[Any]) -> None:
        bridge, writer = self._bridge, self._writer
        if bridge is None or writer is None:
            raise PostgresError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        if not items:
            return
        for attempt in range(1, self.retry.attempts + 1):
            try:
                written, rejected = await bridge.run(writer.write, items)
                break
            except (*CONNECTION_ERRORS, PostgresConnectError) as error:
                if attempt == self.retry.attempts:
                    raise PostgresWriteError(
                        f"{len(items)} items not written to {self.table!r} on "
                        f"{redacted(self.dsn)} after {attempt} attempts (last error: "
                        f"{type(error).__name__}: {str(error).strip()})"
                    ) from error
                self.stats.retries += 1
                await trio.sleep(self.retry.delay(attempt))
        self.stats.written += written
        self.stats.batches += 1
        if rejected:
            self.stats.rejected += len(rejected)
            raise RejectedItems(rejected)
