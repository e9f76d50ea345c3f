"""Reading a logical replication slot with wal2json: the queries in the CDC source's bridge
thread, the decoding in trio's.

The slot is read with ``pg_logical_slot_peek_changes`` (which does not move it) through a
server-side cursor, ``8 * batch_size`` rows per ``FETCH``, and moved with
``pg_replication_slot_advance`` only when the source was told the changes are written. A
peek starts again at the slot's position, so rows already handed out are recognised by
their position (the end of their transaction's commit record, then their rank in the
transaction; decoding is deterministic) and skipped.

The slot is advanced only to the end of a transaction's commit record: logical decoding
resumes at transaction boundaries, so a transaction counts as written once all its changes
are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson
import psycopg

from .change import SETTERS, ChangeEvent, int_to_lsn, lsn_to_int
from .connection import (
    PostgresError,
    close_quietly,
    connect,
    describe_table,
    redacted,
)

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
KINDS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}
FETCH_BATCHES = 8  # batches per FETCH (per bridge crossing)
_AFTER_COMMIT = 1 << 62  # the rank of a commit row: after every change of its transaction


class ReplicationSetupError(PostgresError):
    """The server cannot serve the CDC source: wal_level, the wal2json plugin, the slot."""


@attrs.frozen
class Fetched:
    """One FETCH, undecoded (``rows``: wal2json's JSON texts, in order), and whether the
    peek is over (with how many rows it had)."""

    rows: list[str]
    exhausted: bool
    peek_rows: int


@attrs.frozen
class Decoded:
    """Rows of a FETCH, decoded: the new events; ``runs``, the end of each one's transaction
    run-length encoded (``[end, count]``, in order, ``count`` events of that transaction);
    and the commits read (transaction ends)."""

    events: list[ChangeEvent]
    runs: list[list[int]]
    commits: list[int]


def _wal2json_name(name: str) -> str:
    # wal2json's table lists separate with ',' and '.', and '*' is a wildcard.
    return re.sub(r"([\\,.*])", r"\\\1", name)


class SlotReader:
    """Owns the CDC source's two connections: ``reader`` (the peek cursor's transaction) and
    ``control`` (autocommit: slot checks and advances). Every method runs in the source's
    bridge thread."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        tables: Sequence[tuple[str | None, str]],
        actions: Sequence[str],
        batch_size: int,
        create_slot: bool,
        full_before_images: bool,
        connect_timeout: float,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.tables = tables
        self.actions = actions
        self.batch_size = batch_size
        # One peek decodes at most about this many changes (whole transactions); a peek
        # also re-reads what is handed out and not yet acknowledged, so it is kept well
        # above the source's acknowledgment interval.
        self.peek_limit = 32 * batch_size
        # Rows per FETCH, i.e. per bridge crossing. Each crossing costs two thread wake-ups,
        # and each wake-up of a thread that must take the GIL back from a busy trio thread
        # can wait for the interpreter's switch interval (5 ms): fewer, larger crossings.
        self.fetch_size = FETCH_BATCHES * batch_size
        self.create_slot = create_slot
        self.full_before_images = full_before_images
        self.connect_timeout = connect_timeout
        self.reader: psycopg.Connection[Any] | None = None
        self.control: psycopg.Connection[Any] | None = None
        self.cursor: psycopg.ServerCursor[Any] | None = None
        self.options: list[str] = []
        self.last: tuple[int, int] = (0, 0)  # position of the last row consumed
        self._txn_end = 0
        self._txn_rank = 0
        self._txn_xid = 0
        self._txn_time = 0.0
        self._txn_commit_lsn = ""
        self._peek_rows = 0

    # -- connections ------------------------------------------------------------------
    def open(self) -> int:
        """Connect, check the server and the slot (create it if asked); returns the slot's
        confirmed position."""
        try:
            self._connect()
            control = self.control
            assert control is not None
            level = control.execute("SHOW wal_level").fetchone()
            if level is None or level[0] != "logical":
                raise ReplicationSetupError(
                    f"PostgreSQL at {redacted(self.dsn)} runs with wal_level="
                    f"{level[0] if level else '?'}: change data capture needs wal_level=logical "
                    "(set it in postgresql.conf and restart the server)"
                )
            # Column type names are left out (include-types): events carry values only, and
            # they are a third of the JSON to send and parse.
            options = ["format-version", "2", "include-xids", "1", "include-timestamp", "1",
                       "include-lsn", "1", "include-transaction", "1", "include-types", "0",
                       "actions", ",".join(self.actions)]
            names = []
            for schema, name in self.tables:
                table = describe_table(control, schema, name)
                if self.full_before_images and table.replica_identity != "f":
                    raise ReplicationSetupError(
                        f"table {table.qualified} does not log whole old rows (REPLICA "
                        "IDENTITY is not FULL), so updates and deletes would have only the key "
                        f"as before image: ALTER TABLE {table.qualified} REPLICA IDENTITY FULL, "
                        "or full_before_images=False"
                    )
                names.append(f"{_wal2json_name(table.schema)}.{_wal2json_name(table.name)}")
            if names:
                options += ["add-tables", ",".join(names)]
            self.options = options
            self._check_slot(control)
            if not self.tables and self.full_before_images:
                self._check_all_tables(control)
            return self.confirmed()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        self.control = connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout,
                               application_name="haive-postgres-cdc")
        self.reader = connect(self.dsn, autocommit=False, connect_timeout=self.connect_timeout,
                              application_name="haive-postgres-cdc")

    def _check_all_tables(self, control: psycopg.Connection[Any]) -> None:
        """Reading every table: each must log whole old rows."""
        partial = [
            f"{schema}.{name}" for schema, name in control.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND c.relreplident <> 'f' AND c.relpersistence = 'p' "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
            ).fetchall()
        ]
        if partial:
            shown = ", ".join(partial[:5]) + (f" and {len(partial) - 5} more" if len(partial) > 5
                                              else "")
            raise ReplicationSetupError(
                f"reading every table (tables=None), but {shown} do not log whole old rows "
                "(REPLICA IDENTITY is not FULL), so their updates and deletes would have only "
                "the key as before image: ALTER TABLE ... REPLICA IDENTITY FULL, name the "
                "tables to read (tables=[...]), or full_before_images=False"
            )

    def _check_slot(self, control: psycopg.Connection[Any]) -> None:
        row = control.execute(
            "SELECT plugin, slot_type, database = current_database() FROM pg_replication_slots "
            "WHERE slot_name = %s", (self.slot,)
        ).fetchone()
        if row is None:
            if not self.create_slot:
                raise ReplicationSetupError(
                    f"no replication slot {self.slot!r} on {redacted(self.dsn)} (create_slot="
                    "False): create it with SELECT pg_create_logical_replication_slot("
                    f"'{self.slot}', 'wal2json')"
                )
            try:
                control.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')",
                                (self.slot,))
            except psycopg.Error as error:
                raise ReplicationSetupError(self._plugin_hint(error)) from error
            return
        plugin, kind, same_database = row
        if kind != "logical" or plugin != "wal2json":
            raise ReplicationSetupError(
                f"replication slot {self.slot!r} is a {kind} slot with plugin {plugin!r}: the "
                "CDC source reads logical slots of the wal2json plugin (use another slot name)"
            )
        if not same_database:
            raise ReplicationSetupError(
                f"replication slot {self.slot!r} belongs to another database than the one of "
                f"{redacted(self.dsn)}: a logical slot decodes its own database only"
            )

    def _plugin_hint(self, error: psycopg.Error) -> str:
        message = str(error).strip()
        hint = ""
        if "may not be used as an output plugin" in message:
            hint = (": this server restricts output plugins; add wal2json to "
                    "output_plugin_libraries (ALTER SYSTEM SET output_plugin_libraries = "
                    "pgoutput, wal2json; SELECT pg_reload_conf())")
        elif "wal2json" in message and "could not access file" in message:
            hint = ": install the wal2json plugin (Debian: postgresql-<version>-wal2json)"
        return f"cannot use the wal2json slot {self.slot!r}: {message}{hint}"

    def reset(self) -> None:
        """Drop both connections and open new ones (after the server went away); the next
        fetch peeks again from the slot's position, skipping what was handed out."""
        self.close()
        self._connect()

    def close(self) -> None:
        self.cursor = None
        close_quietly(self.reader)
        close_quietly(self.control)
        self.reader = self.control = None

    # -- slot -------------------------------------------------------------------------
    def confirmed(self) -> int:
        """The slot's confirmed position (where a restart resumes)."""
        assert self.control is not None
        row = self.control.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        if row is None:
            raise ReplicationSetupError(f"replication slot {self.slot!r} was dropped")
        return lsn_to_int(row[0]) if row[0] else 0

    def advance(self, position: int) -> None:
        """Move the slot to ``position`` (the end of a written transaction)."""
        if self.control is None or self.control.closed:
            self.reset()
        assert self.control is not None
        self.control.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                             (self.slot, int_to_lsn(position)))

    # -- reading ----------------------------------------------------------------------
    def fetch(self) -> Fetched:
        """At most ``fetch_size`` rows of the current peek (a new peek if none is open),
        undecoded: :meth:`decode` runs in trio's thread, so this thread holds the GIL only
        briefly and its network waits overlap the pipeline's work."""
        if self.reader is None or self.reader.closed or self.reader.broken:
            self.reset()
        reader = self.reader
        assert reader is not None
        if self.cursor is None:
            cursor: psycopg.ServerCursor[Any] = reader.cursor(name="haive_cdc")
            cursor.execute(
                "SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, %s, "
                + ", ".join(["%s"] * len(self.options)) + ")",
                [self.slot, self.peek_limit, *self.options],
            )
            self.cursor = cursor
            self._peek_rows = 0
        try:
            rows = self.cursor.fetchmany(self.fetch_size)
        except psycopg.Error as error:
            self.cursor = None
            _end_transaction(reader)
            if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
                raise
            raise ReplicationSetupError(self._plugin_hint(error)) from error
        self._peek_rows += len(rows)
        exhausted = len(rows) < self.fetch_size
        if exhausted:
            self.cursor.close()
            self.cursor = None
            reader.commit()  # no transaction stays open between peeks
        return Fetched([data for (data,) in rows], exhausted, self._peek_rows)

    def decode(self, rows: list[str]) -> Decoded:
        """The row changes among ``rows`` (in order, after the rows decoded before) that
        were not handed out yet. Called from trio's thread, never concurrently.

        The loop is the source's cost per change, so it is kept lean: positions only
        increase along a peek, so once a row is past what was handed out (``self.last``)
        every later one is too and no more comparisons are made."""
        events: list[ChangeEvent] = []
        runs: list[list[int]] = []  # [transaction end, events of it in this call]
        commits: list[int] = []
        threshold = self.last
        last_end, last_rank = threshold
        passed = False
        end, rank, xid = self._txn_end, self._txn_rank, self._txn_xid
        when, commit_lsn = self._txn_time, self._txn_commit_lsn
        kinds, loads, new, add = KINDS, orjson.loads, object.__new__, events.append
        s_kind, s_schema, s_table, s_before, s_after, s_xid, s_lsn, s_commit, s_time = SETTERS
        run: list[int] = [-1, 0]  # no transaction ends at -1
        for data in rows:
            try:
                change = loads(data)
            except orjson.JSONDecodeError:
                change = json.loads(data)  # integers beyond 64 bits, NaN, Infinity
            action = change["action"]
            kind = kinds.get(action)
            if kind is None:
                if action == "B":
                    commit_lsn = change["nextlsn"]
                    end = lsn_to_int(commit_lsn)
                    rank = 0
                    xid = change.get("xid", 0)
                    when = datetime.fromisoformat(change["timestamp"]).timestamp()
                elif action == "C" and (passed or (end, _AFTER_COMMIT) > threshold):
                    passed = True
                    commits.append(end)
                    last_end, last_rank = end, _AFTER_COMMIT
                continue  # else a logical message or a future action: not a row change
            rank += 1
            if not passed:
                if (end, rank) <= threshold:
                    continue  # handed out before this peek, not yet acknowledged
                passed = True
            last_end, last_rank = end, rank
            columns = change.get("columns")
            identity = change.get("identity")
            # new_change_event(...), inlined: this loop is the source's cost per change
            item = new(ChangeEvent)
            s_kind(item, kind)
            s_schema(item, change.get("schema", ""))
            s_table(item, change.get("table", ""))
            s_before(item, None if identity is None
                     else {c["name"]: c["value"] for c in identity})
            s_after(item, None if columns is None or kind == "delete"
                    else {c["name"]: c["value"] for c in columns})
            s_xid(item, xid)
            s_lsn(item, change.get("lsn", ""))
            s_commit(item, commit_lsn)
            s_time(item, when)
            add(item)
            if run[0] == end:
                run[1] += 1
            else:
                run = [end, 1]
                runs.append(run)
        self.last = (last_end, last_rank)
        self._txn_end, self._txn_rank, self._txn_xid = end, rank, xid
        self._txn_time, self._txn_commit_lsn = when, commit_lsn
        return Decoded(events, runs, commits)


def _end_transaction(connection: psycopg.Connection[Any]) -> None:
    if connection.broken:
        close_quietly(connection)
        return
    try:
        connection.rollback()
    except psycopg.Error:
        close_quietly(connection)
