"""PostgreSQL change-data-capture source: a logical replication slot (wal2json), advanced
only after the pipeline wrote.

Why wal2json read with ``pg_logical_slot_peek_changes`` + ``pg_replication_slot_advance``
over an ordinary psycopg connection (not the streaming replication protocol, not pgoutput):

* **Positions we control.** Peeking does not move the slot; the source advances it
  explicitly, to the end of a transaction whose changes were all written. Nothing moves it
  behind our back (a streaming replication connection reports flush positions on its own
  schedule), so a crash or ``kill -9`` resumes from the last written transaction.
* **Bounded reads.** The peek runs through a server-side cursor, ``FETCH 8 * batch_size``
  per bridge crossing, one FETCH ahead; the source fetches only when the pipeline asks for
  the next batch, so a full pipeline stops the reading (the changes stay in the WAL, held
  by the slot).
* **No decoder of our own.** wal2json (Debian package ``postgresql-<version>-wal2json``,
  maintained with PostgreSQL's releases) decodes on the server into JSON, parsed here with
  orjson; the Python pgoutput decoders are not maintained, and psycopg 3 has no replication
  protocol support.
* **Ordinary connections**: no ``replication`` connection privilege, works through
  connection poolers, reconnects like any client.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.io.sources import DataSource
from haive.dataflow.runtime.bridge import PendingCall, ThreadBridge, open_thread_bridge
from haive.dataflow.runtime.results import Result
from haive.dataflow.runtime.retry import RetryPolicy
from haive.dataflow.runtime.validation import BOOL, POSITIVE_INT, duration

from .change import ChangeEvent, int_to_lsn
from .connection import (
    DEFAULT_DSN,
    PostgresConnectError,
    PostgresError,
    check_dsn,
    redacted,
    split_table,
)
from .slot import SLOT_NAME, Fetched, SlotReader
from .writing import CONNECTION_ERRORS

ACTIONS = ("insert", "update", "delete", "truncate")
DEFAULT_RECONNECT = RetryPolicy(attempts=1_000_000, backoff=0.1, max_backoff=5.0)


@attrs.define
class PostgresCdcSourceStats:
    """What a :class:`PostgresCdcSource` did, counted per run."""

    changes: int = 0  # change events handed to the pipeline
    transactions: int = 0  # commits read
    advances: int = 0  # times the slot was moved
    confirmed_lsn: str = ""  # where the slot is (a restart resumes there)
    read_errors: int = 0  # fetches that failed (server away) and were retried on a new connection
    advance_errors: int = 0  # advances that failed (retried at the next acknowledgment)
    left_unacknowledged: int = 0  # handed out, not acknowledged when the source closed


class PostgresCdcSource(DataSource):
    """Streams the row changes committed in a PostgreSQL database from the logical
    replication slot ``slot`` (created with the wal2json plugin if missing).

    Items are :class:`~haive_plugin_postgres.change.ChangeEvent` objects (kind, table,
    before and after images, xid, LSN, commit time as ``timestamp``), in commit order.
    ``tables`` limits them to some tables (``"table"`` or ``"schema.table"``); ``actions``
    to some kinds of change. Before images are whole rows only for tables with ``REPLICA
    IDENTITY FULL``: with ``full_before_images=True`` (the default) every table read (all of
    them when ``tables`` is None) is checked for it when the source opens. One reader per
    slot: every reader of a slot gets all its changes.

    At least once: the slot is advanced (``pg_replication_slot_advance``) only after the
    pipeline wrote every change of a transaction (before each new peek, when caught up, at
    close, else at most every ``advance_interval``), so a crash resumes from the first
    transaction not fully written; changes already written may come again (duplicates,
    never losses). The server needs ``wal_level=logical`` and the wal2json plugin; a slot
    holds the WAL it has not passed, so drop slots you no longer read (:func:`drop_slot`).

    Example (``logical_dsn``: a database on a server with ``wal_level=logical``)::

        >>> import psycopg, trio
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline
        >>> from haive_plugin_postgres import drop_slot
        >>> def run_sql(*statements):
        ...     with psycopg.connect(logical_dsn, autocommit=True) as connection:
        ...         for statement in statements:
        ...             _ = connection.execute(statement)
        >>> run_sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)",
        ...         "ALTER TABLE accounts REPLICA IDENTITY FULL")
        >>> async def main():
        ...     source = PostgresCdcSource("doc_slot", dsn=logical_dsn, tables=["accounts"],
        ...                                stop_when_drained=True)
        ...     async with source:  # creates the slot: changes from now on are kept for it
        ...         pass
        ...     run_sql("INSERT INTO accounts VALUES (1, 10)",
        ...             "UPDATE accounts SET balance = 15 WHERE id = 1")
        ...     pipeline = StreamingPipeline("changes")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda change: (change.kind, change.before, change.after))
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     await pipeline.execute()
        ...     await drop_slot("doc_slot", logical_dsn)
        ...     return sink.items
        >>> trio.run(main)
        [('insert', None, {'id': 1, 'balance': 10}), ('update', {'id': 1, 'balance': 10}, {'id': 1, 'balance': 15})]
        >>> run_sql("DROP TABLE accounts")
    """

    PLUGIN_NAME = "postgres_cdc"
    acknowledges = True

    def __init__(
        self,
        slot: str = "haive",
        *,
        dsn: str = DEFAULT_DSN,
        tables: Sequence[str] | None = None,
        actions: Sequence[str] = ("insert", "update", "delete"),
        batch_size: int = 1000,
        ack_every: int | None = None,
        advance_interval: Any = "1s",
        poll_interval: Any = "200ms",
        create_slot: bool = True,
        full_before_images: bool = True,
        stop_when_drained: bool = False,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
        connect_timeout: Any = "10s",
    ) -> None:
        owner = "PostgresCdcSource"
        if not isinstance(slot, str) or not SLOT_NAME.fullmatch(slot):
            raise ConfigError(f"{owner}(slot={slot!r}): slot must be 1 to 63 lower-case "
                              f"letters, digits or underscores, got {slot!r}")
        self.slot = slot
        self.dsn = check_dsn(owner, dsn)
        if tables is None:
            self.tables: list[tuple[str | None, str]] = []
        elif isinstance(tables, Sequence) and not isinstance(tables, str) and tables:
            self.tables = [split_table(owner, "tables", table) for table in tables]
        else:
            raise ConfigError(f"{owner}(tables={tables!r}): tables must be a non-empty list "
                              f"of table names, or None for all tables, got {tables!r}")
        if (isinstance(actions, str) or not isinstance(actions, Sequence) or not actions
                or any(action not in ACTIONS for action in actions)):
            raise ConfigError(f"{owner}(actions={actions!r}): actions must be a non-empty "
                              f"list of {', '.join(map(repr, ACTIONS))}, got {actions!r}")
        self.actions = tuple(actions)
        self.batch_size = POSITIVE_INT.check(owner, "batch_size", batch_size)
        self.ack_every = POSITIVE_INT.check(
            owner, "ack_every", ack_every if ack_every is not None else 4 * self.batch_size
        )
        self.advance_interval = duration(owner, "advance_interval", advance_interval,
                                         positive=False)
        self.poll_interval = duration(owner, "poll_interval", poll_interval)
        self.create_slot = BOOL.check(owner, "create_slot", create_slot)
        self.full_before_images = BOOL.check(owner, "full_before_images", full_before_images)
        self.stop_when_drained = BOOL.check(owner, "stop_when_drained", stop_when_drained)
        if not isinstance(reconnect, RetryPolicy):
            raise ConfigError(f"{owner}(reconnect={reconnect!r}): reconnect must be a "
                              f"RetryPolicy, got {reconnect!r}")
        self.reconnect = reconnect
        self.connect_timeout = duration(owner, "connect_timeout", connect_timeout)
        self.stats = PostgresCdcSourceStats()
        # the changes handed out and not acknowledged, in order, as [end of their
        # transaction, how many]; _pending counts them
        self._unacked: deque[list[int]] = deque()
        self._pending = 0
        # ends of the transactions read completely and not yet passed by the slot
        self._commits: deque[int] = deque()
        self._confirmed = 0
        self._target = 0  # where the slot may go: the end of the last written transaction
        self._advanced_at = -math.inf  # trio clock of the last advance
        self._exit = AsyncExitStack()
        self._bridge: ThreadBridge | None = None
        self._reader: SlotReader | None = None

    def __repr__(self) -> str:
        return f"PostgresCdcSource({self.slot!r}, dsn={redacted(self.dsn)!r})"

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        self.stats = PostgresCdcSourceStats()
        self._unacked.clear()
        self._pending = 0
        self._commits.clear()
        # Counted from the open: the first acknowledgment, a few batches in, moving the slot
        # at once would cost a decode of the WAL on the server for little (see _advance).
        self._advanced_at = trio.current_time()
        bridge = await self._exit.enter_async_context(
            open_thread_bridge(name=f"postgres-cdc-{self.slot}")
        )
        self._bridge = bridge
        reader = SlotReader(self.dsn, self.slot, self.tables, self.actions, self.batch_size,
                            self.create_slot, self.full_before_images, self.connect_timeout)
        self._exit.push_async_callback(bridge.run, reader.close)
        try:
            self._confirmed = self._target = await bridge.run(reader.open)
        except BaseException:
            await self.aclose()
            raise
        self.stats.confirmed_lsn = int_to_lsn(self._confirmed)
        self._reader = reader

    async def aclose(self) -> None:
        if self._bridge is not None and self._reader is not None and self._target > self._confirmed:
            with trio.CancelScope(shield=True):  # written is written: pass it, also on errors
                await self._advance(force=True)
        # What was handed out and not acknowledged stays behind the slot: read again next run.
        self.stats.left_unacknowledged += self._pending
        self._unacked.clear()
        self._pending = 0
        self._reader = None
        self._bridge = None
        await self._exit.aclose()

    # -- reading ------------------------------------------------------------------------
    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        bridge, reader = self._bridge, self._reader
        if bridge is None or reader is None:
            raise PostgresError(f"{self!r} is not open: the pipeline opens it (or `async with`)")
        failures = 0
        ahead: PendingCall[Fetched] | None = None
        while True:
            try:
                if ahead is not None:
                    fetched: Fetched = await ahead.result()
                else:
                    fetched = await bridge.run(reader.fetch)
                failures = 0
            except (*CONNECTION_ERRORS, PostgresConnectError):
                ahead = None
                failures += 1
                self.stats.read_errors += 1
                if failures >= self.reconnect.attempts:
                    raise
                await trio.sleep(self.reconnect.delay(failures))
                continue
            # Read ahead: the next FETCH of this peek runs in the bridge's thread while the
            # pipeline handles this one (bounded: one FETCH ahead). After the last FETCH of a
            # peek, the next peek must wait for the slot to move, so nothing is read ahead.
            ahead = None if fetched.exhausted else bridge.submit(reader.fetch)
            rows, size = fetched.rows, self.batch_size
            handed_out = False
            for first in range(0, len(rows), size):
                # Decoded here, a batch at a time: the GIL stays with this thread and the
                # batches reach the pipeline as soon as each is decoded.
                decoded = reader.decode(rows[first : first + size])
                events = decoded.events
                self._commits.extend(decoded.commits)
                self.stats.transactions += len(decoded.commits)
                if events:
                    self._add_unacked(decoded.runs, len(events))
                    handed_out = True
                    self.stats.changes += len(events)
                    for start in range(0, len(events), chunk_size):
                        yield events[start : start + chunk_size]
                if self._pending >= self.ack_every:
                    yield []  # an acknowledgment point: the slot may move on
            if not fetched.exhausted:
                continue
            # This peek is over; the next one starts at the slot's position, so first have
            # everything handed out acknowledged and move the slot past it (and past the
            # transactions that had nothing for us), or the next peek would read it again.
            if self._pending:
                yield []
            advanced = await self._advance(force=True)
            if fetched.peek_rows == 0 and not self._pending and self.stop_when_drained:
                return
            if not handed_out and not advanced:
                await trio.sleep(self.poll_interval)  # caught up: poll

    def _add_unacked(self, runs: list[list[int]], count: int) -> None:
        """``count`` changes handed out, in ``runs`` of one transaction each."""
        unacked = self._unacked
        if unacked and unacked[-1][0] == runs[0][0]:  # a transaction split across FETCHes
            unacked[-1][1] += runs[0][1]
            runs = runs[1:]
        unacked.extend(runs)
        self._pending += count

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` changes handed out are written: the slot may move past every
        transaction all of whose changes are. It is moved (one crossing) at most every
        ``advance_interval``, when the source is caught up, and when it closes."""
        if count < 0 or count > self._pending:
            raise ConfigError(
                f"acknowledge({count}): only {self._pending} changes are unacknowledged"
            )
        self._pending -= count
        unacked = self._unacked
        while count:
            head = unacked[0]
            if head[1] > count:
                head[1] -= count
                break
            count -= head[1]
            unacked.popleft()
        await self._advance()

    async def _advance(self, *, force: bool = False) -> bool:
        # The transactions before the oldest unacknowledged change's are fully written.
        first_open = self._unacked[0][0] if self._unacked else None
        commits, target = self._commits, self._target
        while commits and (first_open is None or commits[0] < first_open):
            target = commits.popleft()
        self._target = target
        if target <= self._confirmed:
            return False
        # Every advance makes the server decode the WAL from the slot's restart point up to
        # the target (it moves that point only at the WAL's running-transactions records),
        # so advancing at every acknowledgment costs more than the reading itself.
        if not force and trio.current_time() - self._advanced_at < self.advance_interval:
            return False
        assert self._bridge is not None and self._reader is not None
        try:
            await self._bridge.run(self._reader.advance, target)
        except (*CONNECTION_ERRORS, PostgresConnectError):
            self.stats.advance_errors += 1  # tried again at the next acknowledgment
            return False
        self._confirmed = target
        self._advanced_at = trio.current_time()
        self.stats.advances += 1
        self.stats.confirmed_lsn = int_to_lsn(target)
        return True

    async def reject(self, failed: list[Result]) -> None:
        """Changes have nowhere to go but the pipeline's dead-letter sink: without one the
        run stops here, the slot staying before them (they come again on the next run)."""
        first = failed[0]
        raise PostgresError(
            f"{len(failed)} change(s) failed (first in node {first.node!r}: "
            f"{type(first.error).__name__}: {first.error}) and the pipeline has no dead-letter "
            "sink: set one (pipeline.set_dead_letter_sink) to keep them and go on; the slot "
            f"{self.slot!r} stays before them"
        )


__all__ = ["ChangeEvent", "PostgresCdcSource", "PostgresCdcSourceStats"]
