"""Writing a partitioned stream by key: :class:`PartitionedStreamSink`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from haive.dataflow.errors import ConfigError, SerializationError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink

from .client import DEFAULT_URL, RedisClient
from .cluster import ClusterClient, stream_client
from .partitioning import PartitionedStream, key_bytes
from .stream_sink import _positive_int
from .stream_wire import EntryCodec, _check_replies, pack_xadds


class PartitionedStreamSink(StreamSink):
    """Appends items to the partition of their key (``XADD``, one write per batch).

    ``key``: the item field holding the key (items are mappings) or a function of the item.
    Items of one key keep their order (one partition, appended in batch order). The
    partition count is checked against the one stored at creation when the sink opens (and
    stored when the stream is new). An item whose key is missing, of another type, or that
    does not encode is left out and reported (:class:`~haive.dataflow.io.sinks.RejectedItems`).

    Example::

        >>> import uuid
        >>> import trio
        >>> async def main():
        ...     sink = PartitionedStreamSink(f"doc-{uuid.uuid4().hex[:8]}", 4, key="user")
        ...     async with sink:
        ...         await sink.write_batch([{"user": "ada", "n": 1}, {"user": "dan", "n": 2}])
        ...         lengths = [await sink.client.execute("XLEN", s) for s in sink.layout.streams()]
        ...         await sink.client.execute("DEL", sink.layout.count_key, *sink.layout.streams())
        ...     return lengths, sink.layout.partition("ada"), sink.layout.partition("dan")
        >>> trio.run(main)
        ([1, 0, 0, 1], 0, 3)
    """

    PLUGIN_NAME = "redis_partitioned_stream"

    def __init__(
        self,
        stream: str | PartitionedStream,
        partitions: int | None = None,
        *,
        key: str | Callable[[Any], object],
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer | None = None,
        field: str = "data",
        pool_size: int = 4,
    ) -> None:
        if isinstance(stream, PartitionedStream):
            self.layout = stream
        elif partitions is None:
            raise ConfigError(
                f"PartitionedStreamSink(partitions=None): partitions must be the partition "
                f"count of {stream!r} (fixed when it is created)"
            )
        else:
            self.layout = PartitionedStream(stream, partitions)
        if isinstance(key, str):
            if not key:
                raise ConfigError("PartitionedStreamSink(key=''): key must name a field")
            name = key
            self.key: Callable[[Any], object] = lambda item: item[name]
        elif callable(key):
            self.key = key
        else:
            raise ConfigError(
                f"PartitionedStreamSink(key={key!r}): key must be a field name or a function"
            )
        if maxlen is not None:
            _positive_int(maxlen, "maxlen")
        self.maxlen = maxlen
        self.approximate = approximate
        self.codec = EntryCodec(codec, field)
        self._owns_client = client is None
        self.client = (
            client if client is not None else stream_client(url, self.layout.count_key, pool_size)
        )
        self.url = self.client.url
        self.pool_size = pool_size
        self._clients: dict[int, RedisClient] = {}
        self.written = 0

    def __repr__(self) -> str:
        return f"PartitionedStreamSink({self.layout.name!r}, {self.layout.partitions})"

    def use_serializer(self, serializer: Serializer) -> None:
        """Encode items with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, repr(self))

    async def open(self) -> None:
        await self.layout.ensure(self.client)

    async def aclose(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._owns_client:
            self.client.close()

    def _client(self, partition: int) -> RedisClient:
        if not isinstance(self.client, ClusterClient):
            return self.client
        client = self._clients.get(partition)
        if client is None:
            client = stream_client(self.url, self.layout.stream(partition), self.pool_size)
            self._clients[partition] = client
        return client

    async def write_batch(self, items: list[Any]) -> None:
        """XADD each item to its key's partition; one write per client."""
        if not items:
            return
        layout = self.layout
        by_partition: dict[int, list[list[bytes]]] = {}
        rejected: dict[int, BaseException] = {}
        encode = self.codec.encode
        for index, item in enumerate(items):
            try:
                partition = layout.partition(key_bytes(self.key(item)))
                fields = encode(item)
            except Exception as exc:  # a missing key, a key of another type, an encoding error
                rejected[index] = SerializationError(
                    f"{self!r}: item not written: {type(exc).__name__}: {exc}"
                )
                continue
            by_partition.setdefault(partition, []).append(fields)
        by_client: dict[int, tuple[RedisClient, list[bytes], int]] = {}
        for partition, entries in by_partition.items():
            client = self._client(partition)
            _, packed, count = by_client.get(id(client), (client, [], 0))
            packed.append(
                pack_xadds(layout.stream(partition), entries, self.maxlen, self.approximate)
            )
            by_client[id(client)] = (client, packed, count + len(entries))
        for client, packed, count in by_client.values():
            replies = await client.send(b"".join(packed), count)
            _check_replies(replies, f"XADD to {layout.name!r} partitions")
            self.written += count
        if rejected:
            raise RejectedItems(rejected)
