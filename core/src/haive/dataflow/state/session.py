"""The product description's state helpers: ``WindowState`` and ``SessionState``.

Both keep their data in a :class:`~haive.dataflow.state.StateStore` (in memory unless one is
given), so a SQLite or Redis store makes them durable and shareable between processes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs

from ..errors import ConfigError
from ..runtime.units import Duration
from ..runtime.validation import POSITIVE_INT, duration
from .backend import StateBackend
from .store import StateStore


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.define
class Session:
    """A user session: counters and free-form data, kept while events keep coming.

    Example::

        >>> session = Session("user-1")
        >>> session.event_count += 1
        >>> session.session_id, session.event_count
        ('user-1', 1)
    """

    session_id: str
    created_at: dt.datetime = attrs.field(factory=_now)
    last_activity: dt.datetime = attrs.field(factory=_now)
    event_count: int = 0
    data: dict[str, Any] = attrs.field(factory=dict)


SessionT = TypeVar("SessionT")


def _store(store: StateStore | StateBackend | str | os.PathLike[str] | None) -> StateStore:
    return store if isinstance(store, StateStore) else StateStore(store)


class SessionState(Generic[SessionT]):
    """Sessions that expire after ``timeout`` without a :meth:`save`.

    ``get_or_create(id)`` returns the live session or a new one; ``save(session)`` stores it
    and restarts its timeout; an expired session is gone (the next ``get_or_create`` starts a
    fresh one). The expiry is the store's TTL: on the default in-memory store it follows
    trio's clock. ``timeout`` is in seconds, not milliseconds: a number, a
    :class:`~datetime.timedelta` or a string such as ``"30m"``.

    Example::

        >>> import trio
        >>> sessions = SessionState(timeout="30m")
        >>> async def main():
        ...     session = await sessions.get_or_create("user-1")
        ...     session.event_count += 1
        ...     await sessions.save(session)
        ...     return (await sessions.get_or_create("user-1")).event_count
        >>> trio.run(main)
        1
    """

    def __init__(
        self,
        timeout: Duration = "30m",
        *,
        store: StateStore | StateBackend | str | os.PathLike[str] | None = None,
        prefix: str = "session:",
        session_type: type[SessionT] = Session,  # type: ignore[assignment]
    ) -> None:
        self.timeout = duration("SessionState", "timeout", timeout)
        self.store = _store(store)
        self.prefix = prefix
        self.session_type = session_type

    def _key(self, session_id: str) -> str:
        if not isinstance(session_id, str) or not session_id:
            raise ConfigError(f"session ids are non-empty strings, got {session_id!r}")
        return self.prefix + session_id

    async def get(self, session_id: str) -> SessionT | None:
        """The live session, or None (never started, ended or expired)."""
        value: SessionT | None = await self.store.get(self._key(session_id), self.session_type)
        return value

    async def get_or_create(self, session_id: str) -> SessionT:
        """The live session, or a new one (not stored until :meth:`save`)."""
        session = await self.get(session_id)
        if session is None:
            session = self.session_type(session_id=session_id)  # type: ignore[call-arg]
        return session

    async def save(self, session: SessionT) -> None:
        """Store ``session``; it expires ``timeout`` after this call unless saved again."""
        session_id = getattr(session, "session_id", None)
        if not isinstance(session_id, str):
            raise ConfigError(f"SessionState.save: {session!r} has no session_id string")
        await self.store.put(self._key(session_id), session, ttl=self.timeout)

    async def end(self, session_id: str) -> bool:
        """Remove the session now; True when it was live."""
        return await self.store.delete(self._key(session_id))

    async def active(self) -> list[SessionT]:
        """Every live session."""
        return [value for _, value in await self.store.scan(self.prefix, self.session_type)]


class WindowState:
    """The recent data of a key: what arrived in the last ``window_size``.

    ``add_to_window(data)`` appends and returns the window's data, oldest first, dropping
    what is older than ``window_size`` (seconds, a ``timedelta`` or ``"5m"``) before the
    newest timestamp (``timestamp=`` event
    time in seconds, else the ``clock``: wall time by default, so a durable store keeps
    meaning across restarts). ``max_items`` also caps the length. Each update is one atomic
    read-modify-write of the store, so several processes can share a window.

    Example::

        >>> import trio
        >>> window = WindowState(window_size="5m")
        >>> async def main():
        ...     await window.add_to_window({"v": 1}, timestamp=0)
        ...     await window.add_to_window({"v": 2}, timestamp=200)
        ...     return await window.add_to_window({"v": 3}, timestamp=400)
        >>> trio.run(main)
        [{'v': 2}, {'v': 3}]
    """

    def __init__(
        self,
        window_size: Duration = "5m",
        *,
        store: StateStore | StateBackend | str | os.PathLike[str] | None = None,
        max_items: int | None = None,
        prefix: str = "window:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_size = duration("WindowState", "window_size", window_size)
        POSITIVE_INT.optional().check("WindowState", "max_items", max_items)
        self.store = _store(store)
        self.max_items = max_items
        self.prefix = prefix
        self.clock = clock

    async def add_to_window(
        self, data: Any, *, key: str = "default", timestamp: float | None = None
    ) -> list[Any]:
        """Add ``data`` to ``key``'s window; returns the window's data after the add."""
        ts = self.clock() if timestamp is None else float(timestamp)
        size = self.window_size
        cap = self.max_items

        def add(entries: list[list[Any]] | None) -> list[list[Any]]:
            rows = [*(entries or ()), [ts, data]]
            newest = max(row[0] for row in rows)
            rows = [row for row in rows if row[0] > newest - size]
            rows.sort(key=lambda row: row[0])
            return rows[-cap:] if cap is not None else rows

        rows: list[list[Any]] = await self.store.update(self.prefix + key, add, ttl=size)
        return [row[1] for row in rows]

    async def get_window(self, key: str = "default") -> list[Any]:
        """The window's data, oldest first (empty after ``window_size`` of silence)."""
        rows = await self.store.get(self.prefix + key)
        return [row[1] for row in rows or ()]

    async def clear(self, key: str = "default") -> bool:
        """Empty ``key``'s window."""
        return await self.store.delete(self.prefix + key)
