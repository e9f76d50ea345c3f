"""The dead-letter stream of a :class:`~haive_plugin_redis.streams.RedisStreamSource`.

Entries that cannot be processed (undecodable, failed in a processor for good, corrupt
counters found by the exactly-once commit) are written to the source's dead-letter stream
(default ``<stream>:dead``, in the input's hash slot) by one :class:`DeadLetterWriter`.
At least once, a write is a pipelined ``XADD`` answered before :meth:`~DeadLetterWriter.write`
returns, so before the entries are acknowledged; exactly once, it is staged in the epoch's
transaction and committed with the acknowledgment, in the same ``MULTI/EXEC``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .stream_wire import _check_replies, pack_xadds

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_exactly_once import Transaction
    from .stream_stats import StreamSourceStats


class DeadLetterWriter:
    """Writes dead letters (flat ``[name, value, ...]`` field lists) to one stream.

    ``transaction``: the exactly-once epoch to stage the ``XADD``\\ s in, or ``None`` to
    send them at once on ``client``. Every entry written is counted in
    ``stats.dead_lettered``.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import RedisClient, StreamSourceStats
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}:dead"
        ...     writer = DeadLetterWriter(client, stream, stats=StreamSourceStats())
        ...     await writer.write([[b"reason", b"bad entry"]])
        ...     entries = await client.execute("XRANGE", stream, "-", "+")
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return writer.stats.dead_lettered, [fields for _, fields in entries]
        >>> trio.run(main)
        (1, [{b'reason': b'bad entry'}])
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        *,
        stats: StreamSourceStats,
        transaction: Transaction | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.stats = stats
        self.transaction = transaction

    def __repr__(self) -> str:
        mode = "staged" if self.transaction is not None else "at once"
        return f"DeadLetterWriter({self.stream!r}, {mode})"

    async def write(self, entries: list[list[bytes]]) -> None:
        """Append ``entries`` (staged in the transaction, or written before returning)."""
        if not entries:
            return
        packed = self.commands(entries)
        if self.transaction is not None:
            self.transaction.stage_xadds(packed, len(entries))
        else:
            _check_replies(
                await self.client.send(packed, len(entries)), f"XADD to {self.stream!r}"
            )

    def commands(self, entries: list[list[bytes]]) -> bytes:
        """The ``XADD``\\ s of ``entries``, counted as dead-lettered, for the caller to send
        (the exactly-once commit puts them in its ``MULTI/EXEC``)."""
        self.stats.dead_lettered += len(entries)
        return pack_xadds(self.stream, entries, None, True)
