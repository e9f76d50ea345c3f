"""One partition owned by one worker: a Redis Streams consumer fenced by the partition's epoch.

A :class:`PartitionMember` is a :class:`~haive_plugin_redis.streams.RedisStreamSource` on the
partition's stream, reading in the group under the consumer name shared by every owner of
the partition (:data:`~haive_plugin_redis.partition_leases.PARTITION_CONSUMER`), so what a
previous owner read and never acknowledged is this owner's pending list, read first. Its
commits are fenced by the epoch its lease was acquired with: exactly once, the commit
``WATCH``\\ es the epoch key and compares it before ``MULTI/EXEC``; at least once, each
``XACK`` runs in a script that checks it. Everything else (decoding, dead letters, failure
handling, staged state and outputs) is the stream source's own code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .partition_leases import PARTITION_CONSUMER
from .streams import RedisStreamSource

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_wire import EntryCodec

#: Partitions never claim entries from other consumers: there is only one per partition.
_NEVER = 10 * 365 * 86400.0


class PartitionMember(RedisStreamSource):
    """The consumer of one owned partition, fenced by ``epoch``.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import EntryCodec, RedisClient
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"{{doc-{uuid.uuid4().hex[:8]}:p0}}"
        ...     await client.execute("SET", stream + ":fence:g:owner", 3)   # the epoch now
        ...     await client.execute("XADD", stream, "*", "data", '{"n": 1}')
        ...     member = PartitionMember(stream, partition=0, epoch=2, group="g", client=client,
        ...                              delivery="at_least_once", batch_size=10,
        ...                              codec=EntryCodec("json"))
        ...     await member.open()
        ...     items = await member.poll(10)
        ...     try:
        ...         await member.acknowledge(1)       # epoch 2 was superseded by 3
        ...     except Exception as exc:
        ...         refused = type(exc).__name__
        ...     await member.aclose()
        ...     await client.execute("DEL", stream, stream + ":fence:g:owner")
        ...     client.close()
        ...     return items, refused, member.stats.fenced_commits
        >>> trio.run(main)
        ([{'n': 1}], 'FencedOff', 1)
    """

    forget_consumer_on_close = False

    def __init__(
        self,
        stream: str,
        *,
        partition: int,
        epoch: int,
        group: str,
        client: RedisClient,
        delivery: str,
        batch_size: int,
        codec: EntryCodec,
        with_ids: bool = False,
        on_failure: str = "dead_letter",
        max_deliveries: int | None = None,
        start: str = "0",
    ) -> None:
        super().__init__(
            stream,
            group=group,
            consumer=PARTITION_CONSUMER,
            client=client,
            delivery=delivery,
            batch_size=batch_size,
            block=0,
            start=start,
            claim_idle=_NEVER,
            with_ids=with_ids,
            on_failure=on_failure,
            max_deliveries=max_deliveries,
        )
        self.codec = codec
        self.partition = partition
        self.epoch = epoch
        token = str(epoch).encode()
        if self._committer is not None:
            self._committer.fence_value = token
        else:
            self._acknowledger.fence = (self.fence_key(), token)

    def __repr__(self) -> str:
        return f"PartitionMember({self.stream!r}, group={self.group!r}, epoch={self.epoch})"

    async def still_owned(self) -> bool:
        """Whether the partition's epoch is still this member's (no newer owner)."""
        held = await self.client.execute("GET", self.fence_key())
        return bool(held == str(self.epoch).encode())
