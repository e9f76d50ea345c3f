"""The SQLite state backend: embedded and durable, driven from trio without blocking it.

All SQL runs in a worker thread (``trio.to_thread`` behind a ``CapacityLimiter(1)``) on one
connection in WAL mode. Operations that arrive while the thread is busy are queued and then
run together, in one transaction, by the next thread call ("group commit"): under load a
thread hop and a commit are paid per group, not per operation.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import trio

from ..errors import ConfigError
from ..runtime.units import Duration
from ..runtime.validation import duration, invalid
from .backend import StateBackend, StateWrite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS haive_state ("
    " key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS haive_state_expiry ON haive_state(expires_at)"
    " WHERE expires_at IS NOT NULL",
)
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PURGE_EVERY = 1000  # writes between two sweeps of expired rows

_Work = Callable[[sqlite3.Connection, float], Any]


class _Op:
    __slots__ = ("done", "error", "fn", "result", "wake", "writes")

    def __init__(self, fn: _Work, writes: bool) -> None:
        self.fn = fn
        self.writes = writes
        self.wake = trio.Event()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (or None)."""
    while prefix:
        last = ord(prefix[-1])
        nxt = last + 1
        if 0xD800 <= nxt <= 0xDFFF:
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def _live_value(conn: sqlite3.Connection, key: str, now: float) -> bytes | None:
    """The value of ``key`` unless it is absent or expired at ``now``."""
    row = conn.execute(
        "SELECT value FROM haive_state WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (key, now),
    ).fetchone()
    return None if row is None else bytes(row[0])


class SQLiteStateBackend(StateBackend):
    """State in one SQLite file (WAL mode): survives process restarts; the default for a path.

    ``StateStore("state.db")``, ``StateStore("sqlite:///state.db")`` (relative, SQLAlchemy
    style) and ``StateStore("sqlite:////var/lib/app/state.db")`` (absolute) all land here;
    ``sqlite://`` alone is a private in-memory database. ``synchronous`` is SQLite's
    durability knob: ``NORMAL`` (default) survives a crash of the process, ``FULL`` also a
    power loss. TTLs use the wall clock (they must mean the same thing after a restart);
    pass ``clock=`` to drive them from elsewhere (it is read in the event loop, so
    ``clock=trio.current_time`` works with a ``MockClock``).

    Several processes may share a file: writes run in ``BEGIN IMMEDIATE`` transactions, so
    :meth:`update` is atomic across processes too.

    Example::

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "state.db")
        >>> async def main():
        ...     backend = SQLiteStateBackend(path)
        ...     await backend.open()
        ...     try:
        ...         await backend.put("k", b"v")
        ...         return await backend.update("k", lambda old: old + b"!")
        ...     finally:
        ...         await backend.aclose()
        >>> trio.run(main)
        b'v!'
    """

    PLUGIN_NAME: ClassVar[str] = "sqlite"
    URL_SCHEMES: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: str = "NORMAL",
        busy_timeout: Duration = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if str(synchronous).upper() not in _SYNCHRONOUS:
            raise ConfigError(
                invalid(
                    "SQLiteStateBackend",
                    "synchronous",
                    synchronous,
                    f"one of {', '.join(_SYNCHRONOUS)} (any case)",
                )
            )
        self.path = os.fspath(path)
        self.synchronous = str(synchronous).upper()
        self.busy_timeout = duration("SQLiteStateBackend", "busy_timeout", busy_timeout, positive=False)
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[_Op] = []
        self._busy = False
        self._writes_since_purge = 0
        self._open_lock = trio.Lock()
        #: Thread calls made and operations they carried (group commit makes ops > calls).
        self.calls = 0
        self.operations = 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStateBackend:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://`` (in memory).

        Query parameters become options: ``sqlite:///s.db?synchronous=FULL``.
        """
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ConfigError(f"SQLiteStateBackend: not a sqlite:// URL: {url!r}")
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"SQLiteStateBackend: {url!r} names a host; use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        query: dict[str, Any] = dict(parse_qsl(parts.query))
        if "busy_timeout" in query:
            query["busy_timeout"] = float(query["busy_timeout"])
        return cls(path or ":memory:", **{**query, **options})

    # -- lifecycle ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        async with self._open_lock:
            if self._conn is None:
                try:
                    self._conn = await trio.to_thread.run_sync(self._connect, limiter=self._limiter)
                except sqlite3.Error as exc:
                    raise ConfigError(
                        f"SQLiteStateBackend: cannot open {self.path!r}: {exc}"
                    ) from exc

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # -- group commit ---------------------------------------------------------------------
    def _execute(self, ops: list[_Op], now: float) -> None:
        """Run ``ops`` in one transaction in the worker thread; errors stay per operation."""
        conn = self._conn
        if conn is None:
            error = trio.ClosedResourceError("SQLiteStateBackend is closed")
            for op in ops:
                op.error = error
            return
        writes = any(op.writes for op in ops)
        # A failing operation must not undo the others of its group: each gets a savepoint.
        isolate = writes and len(ops) > 1
        conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        try:
            for op in ops:
                if isolate:
                    conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(conn, now)
                except Exception as exc:
                    op.error = exc
                    if isolate:
                        conn.execute("ROLLBACK TO op")
                if isolate:
                    conn.execute("RELEASE op")
            if writes:
                self._writes_since_purge += len(ops)
                if self._writes_since_purge >= _PURGE_EVERY:
                    self._writes_since_purge = 0
                    conn.execute(
                        "DELETE FROM haive_state WHERE expires_at IS NOT NULL AND expires_at <= ?",
                        (now,),
                    )
            if writes and not isolate and ops[0].error is not None:
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in ops:
                op.result = None
                op.error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            if not isinstance(exc, Exception):
                raise

    async def _run(self, fn: _Work, *, writes: bool) -> Any:
        if self._conn is None:
            await self.open()
        op = _Op(fn, writes)
        self._pending.append(op)
        if self._busy:
            # Another task is in the thread: it (or its successor) runs us in the next group.
            # Not cancellable, like ``trio.to_thread.run_sync``: the write may already be done.
            with trio.CancelScope(shield=True):
                await op.wake.wait()
        if not op.done:
            self._busy = True
            batch, self._pending = self._pending, []
            try:
                await trio.to_thread.run_sync(
                    self._execute, batch, self.clock(), limiter=self._limiter
                )
            finally:
                self.calls += 1
                self.operations += len(batch)
                for done in batch:
                    done.done = True
                    done.wake.set()
                if self._pending:
                    self._pending[0].wake.set()  # the next leader
                else:
                    self._busy = False
        if op.error is not None:
            raise op.error
        return op.result

    # -- the interface --------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        def work(conn: sqlite3.Connection, now: float) -> bytes | None:
            return _live_value(conn, key, now)

        result: bytes | None = await self._run(work, writes=False)
        return result

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = list(keys)

        def work(conn: sqlite3.Connection, now: float) -> list[bytes | None]:
            found: dict[str, bytes] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in conn.execute(
                    f"SELECT key, value FROM haive_state WHERE key IN ({marks})"
                    " AND (expires_at IS NULL OR expires_at > ?)",
                    (*chunk, now),
                ):
                    found[key] = bytes(value)
            return [found.get(key) for key in keys]

        if not keys:
            return []
        result: list[bytes | None] = await self._run(work, writes=False)
        return result

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO haive_state (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, None if ttl is None else now + ttl),
            )

        await self._run(work, writes=True)

    async def delete(self, key: str) -> bool:
        def work(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "DELETE FROM haive_state WHERE key = ? RETURNING expires_at", (key,)
            )
            rows = cursor.fetchall()
            return any(row[0] is None or row[0] > now for row in rows)

        result: bool = await self._run(work, writes=True)
        return result

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        end = _prefix_end(prefix)

        def work(conn: sqlite3.Connection, now: float) -> list[tuple[str, bytes]]:
            if end is None:
                cursor = conn.execute(
                    "SELECT key, value FROM haive_state WHERE key >= ?"
                    " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                    (prefix, now),
                )
            else:
                cursor = conn.execute(
                    "SELECT key, value FROM haive_state WHERE key >= ? AND key < ?"
                    " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                    (prefix, end, now),
                )
            return [(key, bytes(value)) for key, value in cursor if key.startswith(prefix)]

        result: list[tuple[str, bytes]] = await self._run(work, writes=False)
        return result

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        def work(conn: sqlite3.Connection, now: float) -> bytes | None:
            new = fn(_live_value(conn, key, now))
            if new is None:
                conn.execute("DELETE FROM haive_state WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO haive_state (key, value, expires_at) VALUES (?, ?, ?)",
                    (key, new, None if ttl is None else now + ttl),
                )
            return new

        result: bytes | None = await self._run(work, writes=True)
        return result

    async def write_batch(self, writes: Sequence[StateWrite]) -> None:
        writes = list(writes)

        def work(conn: sqlite3.Connection, now: float) -> None:
            for key, value, ttl in writes:
                if value is None:
                    conn.execute("DELETE FROM haive_state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO haive_state (key, value, expires_at)"
                        " VALUES (?, ?, ?)",
                        (key, value, None if ttl is None else now + ttl),
                    )

        if writes:
            await self._run(work, writes=True)

    async def delete_prefix(self, prefix: str) -> int:
        end = _prefix_end(prefix)

        def work(conn: sqlite3.Connection, now: float) -> int:
            if end is None:
                keys = [
                    k
                    for (k,) in conn.execute(
                        "SELECT key FROM haive_state WHERE key >= ?", (prefix,)
                    )
                    if k.startswith(prefix)
                ]
                conn.executemany("DELETE FROM haive_state WHERE key = ?", [(k,) for k in keys])
                return len(keys)
            cursor = conn.execute(
                "DELETE FROM haive_state WHERE key >= ? AND key < ? RETURNING expires_at",
                (prefix, end),
            )
            return sum(1 for (expires,) in cursor.fetchall() if expires is None or expires > now)

        result: int = await self._run(work, writes=True)
        return result

    async def purge_expired(self) -> int:
        """Remove every expired row now; returns how many."""

        def work(conn: sqlite3.Connection, now: float) -> int:
            cursor = conn.execute(
                "DELETE FROM haive_state WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            return cursor.rowcount

        result: int = await self._run(work, writes=True)
        return result
