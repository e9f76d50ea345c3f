"""At-least-once acknowledgment of what a :class:`~haive_plugin_redis.streams.RedisStreamSource` read.

The pipeline calls the source's ``acknowledge(count)`` once the oldest ``count`` items
yielded are handled (written, dead-lettered or filtered out). At least once, the
:class:`StreamAcknowledger` sends one ``XACK`` of their IDs (with the IDs of the entries
read among them that yielded no item) and only then forgets them, so a run stopped
mid-``XACK`` still counts them as left pending. Exactly once, the whole epoch is committed
instead (:mod:`.stream_exactly_once`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._resp import pack_ids
from .stream_fencing import FencedOff
from .stream_wire import _XACK_CHUNK, _check_replies

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_stats import StreamSourceStats
    from .stream_unacked import UnackedEntries


#: XACK only while the fence key holds this owner's epoch (keyed partitions).
_FENCED_XACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 3))
"""
#: IDs per fenced XACK (Lua's unpack stops near 8,000 values).
_FENCED_CHUNK = 4_000


class StreamAcknowledger:
    """``XACK``\\ s a consumer group's entries once their items are handled.

    Example::

        >>> import uuid
        >>> from collections import deque
        >>> import trio
        >>> from haive_plugin_redis import RedisClient, StreamSourceStats
        >>> from haive_plugin_redis.stream_unacked import UnackedEntries
        >>> async def main():
        ...     client, stream = RedisClient(), f"doc-{uuid.uuid4().hex}"
        ...     await client.execute("XADD", stream, "1-0", "k", "v")
        ...     await client.execute("XGROUP", "CREATE", stream, "g", "0")
        ...     await client.execute("XREADGROUP", "GROUP", "g", "c", "STREAMS", stream, ">")
        ...     unacked = UnackedEntries()
        ...     unacked.add(deque([b"1-0"]), [], deque(["v"]))
        ...     acks = StreamAcknowledger(client, stream, "g", unacked=unacked,
        ...                               stats=StreamSourceStats())
        ...     await acks.acknowledge(1)
        ...     pending = await client.call(client.redis.xpending, stream, "g")
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return acks.stats.acknowledged, pending["pending"], unacked.item_count
        >>> trio.run(main)
        (1, 0, 0)
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        *,
        unacked: UnackedEntries,
        stats: StreamSourceStats,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.unacked = unacked
        self.stats = stats
        #: Keyed partitions: ``(fence key, epoch)``; each XACK first checks the key still
        #: holds the epoch, else :class:`FencedOff` is raised and nothing more is acked.
        self.fence: tuple[str, bytes] | None = None
        #: XACK commands of :meth:`defer`, packed, sent ahead of the reader's next XREADGROUP
        #: (or by :meth:`flush`), and how many IDs they carry.
        self._deferred: list[bytes] = []
        self._deferred_ids = 0

    def __repr__(self) -> str:
        return f"StreamAcknowledger({self.stream!r}, group={self.group!r})"

    async def acknowledge(self, count: int) -> None:
        """``XACK`` the oldest ``count`` items' entries, then forget them."""
        unacked = self.unacked
        covered = unacked.oldest(count)
        await self.xack(unacked.unkept(covered.ids))
        unacked.forget(covered)

    def defer(self, count: int) -> bool:
        """Acknowledge the oldest ``count`` items with the next read instead of at once.

        Their entries are handled (written), so the ``XACK`` may ride ahead of the reader's
        next ``XREADGROUP``, in the same write and round trip, rather than cost a round trip
        of its own with reading stopped. Until it is sent the entries stay pending in Redis
        (a crash redelivers them: at least once holds). False (nothing done) when fenced:
        a fenced XACK must be refused before anything else happens.
        """
        if self.fence is not None:
            return False
        unacked = self.unacked
        covered = unacked.oldest(count)
        ids = unacked.unkept(covered.ids)
        if ids:
            self._deferred.extend(self._pack_xacks(ids))
            self._deferred_ids += len(ids)
        unacked.forget(covered)
        return True

    @property
    def deferred(self) -> int:
        """Entry IDs acknowledged but not sent to Redis yet."""
        return self._deferred_ids

    def take_deferred(self) -> tuple[bytes, int, int]:
        """The deferred XACKs to send now: packed commands, how many, how many IDs."""
        commands, ids = self._deferred, self._deferred_ids
        self._deferred, self._deferred_ids = [], 0
        return b"".join(commands), len(commands), ids

    def confirm(self, replies: list[Any], ids: int) -> None:
        """Check the replies of XACKs taken with :meth:`take_deferred`."""
        _check_replies(replies, f"XACK on {self.stream!r}")
        self.stats.acknowledged += ids

    async def flush(self) -> None:
        """Send the deferred XACKs now (before the source stops or checks it is drained)."""
        packed, commands, ids = self.take_deferred()
        if commands:
            self.confirm(await self.client.send(packed, commands), ids)

    async def settle(self) -> None:
        """``XACK`` the batches held that yielded no item (all dead-lettered or gone)."""
        await self.xack(self.unacked.drain())

    async def xack(self, ids: list[bytes]) -> None:
        """``XACK`` ``ids`` (in chunks, one round trip)."""
        if not ids:
            return
        if self.fence is not None:
            await self._fenced_xack(ids, *self.fence)
            return
        commands = self._pack_xacks(ids)
        _check_replies(
            await self.client.send(b"".join(commands), len(commands)), f"XACK on {self.stream!r}"
        )
        self.stats.acknowledged += len(ids)

    def _pack_xacks(self, ids: list[bytes]) -> list[bytes]:
        return [
            pack_ids(("XACK", self.stream, self.group), ids[i : i + _XACK_CHUNK])
            for i in range(0, len(ids), _XACK_CHUNK)
        ]

    async def _fenced_xack(self, ids: list[bytes], key: str, epoch: bytes) -> None:
        commands = [
            pack_ids(("EVAL", _FENCED_XACK, 2, key, self.stream, epoch, self.group),
                     ids[i : i + _FENCED_CHUNK])
            for i in range(0, len(ids), _FENCED_CHUNK)
        ]
        replies = await self.client.send(b"".join(commands), len(commands))
        _check_replies(replies, f"XACK on {self.stream!r}")
        if any(reply == -1 for reply in replies):
            self.stats.fenced_commits += 1
            raise FencedOff(
                f"XACK on {self.stream!r} refused: the partition's epoch is no longer "
                f"{epoch.decode()} (its lease moved to another owner)"
            )
        self.stats.acknowledged += len(ids)
