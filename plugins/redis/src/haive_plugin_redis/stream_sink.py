"""The Redis stream sink: pipelined ``XADD`` of a batch, or staged for an exactly-once commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from haive.dataflow.errors import ConfigError, SerializationError
from haive.dataflow.io.serializers import Serializer
from haive.dataflow.io.sinks import RejectedItems, StreamSink
from haive.dataflow.io.trace_headers import outgoing_trace_headers

from ._resp import derived_key, pack, same_slot
from .client import DEFAULT_URL, RedisClient
from .cluster import stream_client
from .stream_wire import (
    EntryCodec,
    _check_replies,
    pack_payload_xadds,
    pack_xadds,
    with_trace_fields,
)

if TYPE_CHECKING:
    from .stream_exactly_once import Transaction
    from .streams import RedisStreamSource

#: Entries per pipelined write of an at-least-once batch.
_XADD_CHUNK = 5_000


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


class RedisStreamSink(StreamSink):
    """Appends items to a Redis stream with pipelined ``XADD`` (``MAXLEN ~`` trimming).

    A batch is packed into one write of ``XADD`` commands and its replies read at once;
    ``write_batch`` returns after Redis answered, so a pipeline acknowledges its source
    only after the entries exist. ``maxlen`` caps the stream (``approximate=True`` lets
    Redis trim whole nodes, which is much cheaper). Bound to an exactly-once source
    (:meth:`RedisStreamSource.sink`) it stages the XADDs for the source's commit instead.

    Example::

        >>> import uuid
        >>> import trio
        >>> async def main():
        ...     sink = RedisStreamSink(f"doc-{uuid.uuid4().hex}", maxlen=1000)
        ...     async with sink:
        ...         await sink.write_batch([{"n": 1}, {"n": 2}])
        ...         length = await sink.client.execute("XLEN", sink.stream)
        ...         await sink.client.execute("DEL", sink.stream)
        ...     return length
        >>> trio.run(main)
        2
    """

    PLUGIN_NAME = "redis_stream"

    def __init__(
        self,
        stream: str,
        *,
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer | None = None,
        field: str = "data",
        transaction: RedisStreamSource | None = None,
        pool_size: int = 4,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(f"RedisStreamSink: stream must be a non-empty string, got {stream!r}")
        if maxlen is not None:
            _positive_int(maxlen, "maxlen")
        if transaction is not None:
            if not transaction.exactly_once:
                raise ConfigError("RedisStreamSink: transaction= needs an exactly_once source")
            if not same_slot(stream, transaction.stream):
                raise ConfigError(
                    f"exactly_once: output stream {stream!r} is not in the hash slot of "
                    f"{transaction.stream!r}, so one MULTI/EXEC cannot cover both on Redis "
                    f"Cluster; give it the same hash tag, e.g. "
                    f"{derived_key(transaction.stream, 'out')!r}"
                )
            client = transaction.client
        self.stream = stream
        self.maxlen = maxlen
        self.approximate = approximate
        self.codec = EntryCodec(codec, field)
        self.transaction = transaction
        #: Exactly once: the source's epoch, where the XADDs are staged until its commit.
        self.epoch: Transaction | None = transaction.transaction if transaction else None
        self._owns_client = client is None
        self.client = client if client is not None else stream_client(url, stream, pool_size)
        self.written = 0

    def use_serializer(self, serializer: Serializer) -> None:
        """Encode items with the pipeline's serializer (``StreamingPipeline.set_serializer``)."""
        self.codec = self.codec.adopt(serializer, repr(self))

    def __repr__(self) -> str:
        mode = "exactly_once" if self.transaction is not None else "at_least_once"
        return f"RedisStreamSink({self.stream!r}, maxlen={self.maxlen}, {mode})"

    async def open(self) -> None:
        """Refuse an output key that exists and is not a stream (before anything is read)."""
        kind = (await self.client.send(pack("TYPE", self.stream), 1))[0]
        if kind not in (b"stream", b"none", "stream", "none"):
            kind_text = kind.decode() if isinstance(kind, bytes) else kind
            raise ConfigError(
                f"RedisStreamSink: key {self.stream!r} holds a {kind_text}, not a stream"
            )

    async def aclose(self) -> None:
        if self._owns_client:
            self.client.close()

    def _pack(
        self,
        items: list[Any],
        offset: int,
        rejected: dict[int, BaseException],
        trace: Sequence[Mapping[str, str] | None] | None = None,
    ) -> bytes:
        """XADDs of the items that encode; the others go to ``rejected`` (batch index).

        With ``trace`` (tracing is on: one entry per item of the whole batch), an item's
        trace headers become ``traceparent``/``tracestate`` fields of its entry."""
        dumps = self.codec.fast_dumps
        if dumps is not None and trace is None:
            try:
                payloads = [dumps(item) for item in items]
            except Exception:  # some item does not encode: the per-item path names it
                pass
            else:
                return pack_payload_xadds(
                    self.stream, self.codec.field_bytes, payloads, self.maxlen, self.approximate
                )
        encode = self.codec.encode
        entries: list[list[bytes]] = []
        for index, item in enumerate(items):
            try:
                fields = encode(item)
                if trace is not None and (headers := trace[offset + index]) is not None:
                    fields = with_trace_fields(fields, headers)
                entries.append(fields)
            except Exception as exc:  # a value the codec cannot encode: this item only
                rejected[offset + index] = SerializationError(
                    f"RedisStreamSink {self.stream!r}: item cannot be encoded, not written: {exc}"
                )
        return pack_xadds(self.stream, entries, self.maxlen, self.approximate)

    async def write_batch(self, items: list[Any]) -> None:
        """XADD every item; items that do not encode are left out and reported at the end
        with :class:`~haive.dataflow.io.sinks.RejectedItems` (the pipeline dead-letters them)."""
        if not items:
            return
        rejected: dict[int, BaseException] = {}
        trace = outgoing_trace_headers()
        if self.epoch is not None:
            packed = self._pack(items, 0, rejected, trace)
            count = len(items) - len(rejected)
            if count:
                self.epoch.stage_xadds(packed, count)
            self.written += count
        else:
            for start in range(0, len(items), _XADD_CHUNK):
                chunk = items[start : start + _XADD_CHUNK]
                before = len(rejected)
                packed = self._pack(chunk, start, rejected, trace)
                count = len(chunk) - (len(rejected) - before)
                if count:
                    replies = await self.client.send(packed, count)
                    _check_replies(replies, f"XADD to {self.stream!r}")
                self.written += count
        if rejected:
            raise RejectedItems(rejected)
