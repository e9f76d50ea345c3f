"""The in-memory state backend: a dict, with expiry on trio's clock."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import trio

from .backend import StateBackend, StateWrite


class MemoryStateBackend(StateBackend):
    """Keys and byte values in a dict of this process; the default of ``StateStore()``.

    Expiry follows :func:`trio.current_time`, so a ``MockClock`` drives TTLs in tests.
    Every operation completes without yielding to the scheduler (nothing can interleave
    with it), which also makes :meth:`update` and :meth:`write_batch` atomic.

    Example::

        >>> async def main():
        ...     backend = MemoryStateBackend()
        ...     await backend.put("a:1", b"x", ttl=60)
        ...     await backend.update("a:2", lambda old: (old or b"") + b"y")
        ...     return await backend.scan("a:")
        >>> trio.run(main)
        [('a:1', b'x'), ('a:2', b'y')]
    """

    PLUGIN_NAME: ClassVar[str] = "memory"
    URL_SCHEMES: ClassVar[tuple[str, ...]] = ("memory",)

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStateBackend:
        """``memory://`` (any path is ignored): a new, empty store."""
        return cls(**options)

    def __len__(self) -> int:
        return len(self._data)

    # -- expiry -------------------------------------------------------------------------
    def _live(self, key: str) -> bytes | None:
        value = self._data.get(key)
        if value is not None and self._expires:
            deadline = self._expires.get(key)
            if deadline is not None and deadline <= trio.current_time():
                self._remove(key)
                return None
        return value

    def _remove(self, key: str) -> bool:
        self._expires.pop(key, None)
        return self._data.pop(key, None) is not None

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._data[key] = value
        if ttl is None:
            if self._expires:
                self._expires.pop(key, None)
            return
        now = trio.current_time()
        deadline = now + ttl
        self._expires[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        self._purge(now)

    def _purge(self, now: float) -> None:
        """Drop expired keys nobody reads any more (amortised over writes with a TTL)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if self._expires.get(key) == deadline:
                self._remove(key)

    def purge_expired(self) -> int:
        """Remove every expired key now; returns how many."""
        before = len(self._data)
        now = trio.current_time()
        self._purge(now)
        for key, deadline in list(self._expires.items()):
            if deadline <= now:
                self._remove(key)
        return before - len(self._data)

    # -- the interface --------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        live = self._live
        return [live(key) for key in keys]

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        if self._live(key) is None:
            return False
        return self._remove(key)

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        live = self._live
        out: list[tuple[str, bytes]] = []
        for key in sorted(k for k in self._data if k.startswith(prefix)):
            value = live(key)
            if value is not None:
                out.append((key, value))
        return out

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        new = fn(self._live(key))
        if new is None:
            self._remove(key)
        else:
            self._set(key, new, ttl)
        return new

    async def write_batch(self, writes: Sequence[StateWrite]) -> None:
        for key, value, ttl in writes:
            if value is None:
                self._remove(key)
            else:
                self._set(key, value, ttl)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._data if k.startswith(prefix)]
        live = sum(1 for k in doomed if self._live(k) is not None)
        for key in doomed:
            self._remove(key)
        return live
