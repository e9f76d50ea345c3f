"""The state backend interface that every store (memory, SQLite, Redis...) implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

#: One write of :meth:`StateBackend.write_batch`: ``(key, value or None to delete, ttl)``.
StateWrite = tuple[str, bytes | None, float | None]


class StateBackend(abc.ABC):
    """A byte-oriented key/value store with TTLs and atomic read-modify-write.

    Backends are registered through ``haive_register_state_backends``; each names itself with
    ``PLUGIN_NAME`` and lists the URL schemes it serves in ``URL_SCHEMES`` so that
    ``StateStore("redis://127.0.0.1:6379")`` finds it. Values are bytes: typing and
    serialization are the ``StateStore``'s job. All methods are async and never block the
    event loop (blocking clients run in ``trio.to_thread``).
    """

    PLUGIN_NAME: ClassVar[str] = ""
    URL_SCHEMES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StateBackend:
        """Build a backend for ``url`` (e.g. ``sqlite:///path.db``, ``redis://host:port/0``)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    async def open(self) -> None:
        """Connect / create tables. Called once before use."""

    async def aclose(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or ``None`` when absent or expired."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Set ``key``; with ``ttl`` seconds it expires after that long."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""

    @abc.abstractmethod
    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every live (key, value) whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        """Atomically replace the value with ``fn(old)`` (``None`` deletes); returns the new one.

        ``fn`` must be pure: a backend may call it more than once when it retries an
        optimistic transaction.
        """

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix``; returns how many (used by ``forget``)."""
        removed = 0
        for key, _ in await self.scan(prefix):
            removed += await self.delete(key)
        return removed

    # -- optional batch operations: defaults loop; backends override them to batch ---------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys`` in order (``None`` where absent); one round trip if possible."""
        return [await self.get(key) for key in keys]

    async def write_batch(self, writes: Sequence[StateWrite]) -> None:
        """Apply ``(key, value, ttl)`` writes in order (``value=None`` deletes the key).

        Backends that can apply them atomically (memory, SQLite, Redis MULTI/EXEC) do; the
        default applies them one by one.
        """
        for key, value, ttl in writes:
            if value is None:
                await self.delete(key)
            else:
                await self.put(key, value, ttl=ttl)
