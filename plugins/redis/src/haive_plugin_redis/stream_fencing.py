"""The fenced connection of an exactly-once :class:`~haive_plugin_redis.streams.RedisStreamSource`.

An exactly-once consumer reads, claims and commits on one dedicated connection that
``WATCH``\\ es the consumer's *fence key* from the first command of each epoch. A claimer
taking this consumer's pending entries bumps that key first (:mod:`.stream_claims`), so a
slow-but-alive owner's next ``EXEC`` aborts instead of committing entries that changed
hands. ``EXEC`` ends every ``WATCH``; the next epoch watches again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from haive.dataflow import ConfigError, HaiveError

from ._resp import derived_key, pack
from .cluster import ClusterDedicatedConnection

if TYPE_CHECKING:
    from .client import DedicatedConnection, RedisClient


class FencedOff(HaiveError):
    """This consumer was fenced off: its partition's lease (and epoch) moved to another owner,
    so what it read is the new owner's to acknowledge (keyed partitions, :mod:`.partitioned`)."""


def fence_key(stream: str, group: str, consumer: str) -> str:
    """The key a claimer bumps to fence ``consumer`` of ``group`` off (``stream``'s hash slot).

    Example::

        >>> fence_key("{orders}:in", "billing", "w1")
        '{orders}:in:fence:billing:w1'
    """
    return derived_key(stream, f"fence:{group}:{consumer}")


class FencedConnection:
    """A dedicated connection that ``WATCH``\\ es a fence key before anything else each epoch.

    :meth:`open` connects (lazily) and names the fence key; :meth:`send_watched` sends
    commands after ``WATCH <fence key>`` when the epoch has not watched it yet;
    :meth:`execute` sends a ``MULTI/EXEC``, after which nothing is watched any more.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import RedisClient
        >>> from haive_plugin_redis._resp import pack
        >>> async def main():
        ...     client = RedisClient()
        ...     conn = FencedConnection(client)
        ...     conn.open(f"doc-{uuid.uuid4().hex}:fence")
        ...     try:
        ...         first = await conn.send_watched(pack("PING"), 1)
        ...         watching = conn.watching
        ...         await conn.execute(pack("MULTI") + pack("PING") + pack("EXEC"), 3)
        ...         return first, watching, conn.watching
        ...     finally:
        ...         conn.close()
        ...         client.close()
        >>> trio.run(main)
        ([b'PONG'], True, False)
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.fence_key: str | None = None
        #: Whether the fence key is watched in the current epoch.
        self.watching = False
        self._conn: DedicatedConnection | None = None

    def __repr__(self) -> str:
        return f"FencedConnection(fence_key={self.fence_key!r}, watching={self.watching})"

    def open(self, fence_key: str) -> None:
        """Take a dedicated connection of the client; epochs will watch ``fence_key``."""
        self.fence_key = fence_key
        self._conn = self.client.dedicated()

    def close(self) -> None:
        """Close the connection (its ``WATCH``\\ es go with it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.watching = False

    def _connection(self) -> DedicatedConnection:
        if self._conn is None:
            raise ConfigError("exactly_once state is used before its source was opened")
        return self._conn

    def _watch_command(self) -> bytes:
        assert self.fence_key is not None  # (set by open, with the connection)
        return pack("WATCH", self.fence_key)

    async def watch(self) -> None:
        """``WATCH`` the fence key now, if this epoch has not yet."""
        conn = self._connection()
        if not self.watching:
            await conn.send(self._watch_command(), 1)
            self.watching = True

    async def send_watched(self, packed: bytes, replies: int) -> list[Any]:
        """Send ``packed`` (``replies`` commands) after watching the fence key; their replies."""
        conn = self._connection()
        if self.watching:
            out = await conn.send(packed, replies)
        else:
            out = await conn.send(self._watch_command() + packed, replies + 1)
            del out[0]
        self.watching = True
        return out

    async def watched_read(self, keys: list[str]) -> list[bytes | None]:
        """``WATCH`` ``keys`` and ``MGET`` them (the epoch's reads of keyed state)."""
        replies = await self.send_watched(pack("WATCH", *keys) + pack("MGET", *keys), 2)
        values = replies[-1]
        if isinstance(values, ResponseError):
            raise HaiveError(f"reading state keys failed: {values}")
        out: list[bytes | None] = values
        return out

    async def send(self, packed: bytes, replies: int) -> list[Any]:
        """Send ``packed`` as it is (reads that need no ``WATCH``)."""
        return await self._connection().send(packed, replies)

    async def execute(self, packed: bytes, replies: int) -> list[Any]:
        """Send a ``MULTI`` ... ``EXEC``: the epoch's ``WATCH``\\ es end with it, whatever happens."""
        conn = self._connection()
        try:
            return await conn.send(packed, replies)
        finally:
            self.watching = False

    @property
    def watch_lost(self) -> bool:
        """Redis Cluster: the slot moved this epoch, so the keys were watched elsewhere."""
        conn = self._conn
        return isinstance(conn, ClusterDedicatedConnection) and conn.watch_lost

    def unwatch(self) -> None:
        """The epoch is over (aborted): the next one watches again, on the slot's node."""
        self.watching = False
        if isinstance(self._conn, ClusterDedicatedConnection):
            self._conn.watch_lost = False
