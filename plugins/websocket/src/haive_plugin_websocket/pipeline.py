"""Pipeline parts: client messages as a source, pipeline output broadcast to a room."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio

from haive.dataflow.io.sinks import StreamSink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.io.trace_headers import (
    TRACEPARENT,
    TRACESTATE,
    TraceHeaderLog,
    outgoing_trace_headers,
)
from haive.dataflow.runtime.backpressure import BoundedBuffer

from .rooms import check_room
from .server import ClientSession, WebSocketManager


@attrs.frozen
class ClientMessage:
    """A message a client sent, as a :class:`WebSocketSource` yields it.

    Example::

        >>> ClientMessage("client-1", {"type": "reading", "value": 3}).type
        'reading'
    """

    client_id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type"))


class WebSocketSource(DataSource):
    """Messages clients send to a :class:`WebSocketManager`, as a pipeline source.

    It registers itself as the handler of ``types`` (or, with ``types=None``, of every type
    without a handler of its own) and yields :class:`ClientMessage` items. A full buffer
    applies ``backpressure`` (``block`` slows the sending client's connection down, the
    drop strategies shed load). The source ends when :meth:`close` is called.

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sinks import MemorySink
        >>> from haive_plugin_websocket import StreamingClient, ConnectionConfig
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     source = WebSocketSource(manager, types=["reading"])
        ...     pipeline = StreamingPipeline("ws-in")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda m: m.data["value"] * 10)
        ...     sink = MemorySink()
        ...     pipeline.set_sink(sink)
        ...     async with manager.serving(), trio.open_nursery() as nursery:
        ...         nursery.start_soon(pipeline.execute)
        ...         async with StreamingClient(ConnectionConfig(url=manager.url)).connect() as client:
        ...             for value in (1, 2, 3):
        ...                 await client.send_message({"type": "reading", "value": value})
        ...             await client.flush()
        ...         while len(sink.items) < 3:
        ...             await trio.sleep(0.01)
        ...         source.close()
        ...     return sink.items
        >>> trio.run(main)
        [10, 20, 30]
    """

    PLUGIN_NAME = "websocket"

    def __init__(
        self,
        manager: WebSocketManager,
        *,
        types: Iterable[str] | None = None,
        capacity: int = 10_000,
        backpressure: object = "block",
    ) -> None:
        self.manager = manager
        self.types = list(types) if types is not None else ["*"]
        self.buffer: BoundedBuffer[ClientMessage] = BoundedBuffer(
            capacity, backpressure, name="websocket-source"
        )
        for message_type in self.types:
            manager.on_message(message_type)(self._receive)
        #: Each yielded message's trace fields, kept only while tracing is on.
        self._trace_log = TraceHeaderLog()

    def want_trace_headers(self) -> bool:
        """Keep each message's ``traceparent``/``tracestate`` fields (tracing is on)."""
        self._trace_log.want()
        return True

    def take_trace_headers(self) -> Sequence[Mapping[str, str] | None] | None:
        return self._trace_log.take()

    async def _receive(self, client: ClientSession, message: dict[str, Any]) -> None:
        try:
            await self.buffer.put(ClientMessage(client.client_id, message))
        except trio.ClosedResourceError:
            client.error(
                "unknown_type",
                f"the pipeline reading {message.get('type')!r} messages has stopped",
                message,
            )

    def close(self) -> None:
        """End the source: the pipeline drains what was received, then finishes."""
        self.buffer.close()

    async def batches(self, chunk_size: int) -> AsyncIterator[list[Any]]:
        while True:
            try:
                batch = await self.buffer.get_batch(chunk_size)
            except trio.EndOfChannel:
                return
            if self._trace_log.wanted:
                self._trace_log.record([message_trace_headers(m.data) for m in batch])
            yield batch

    async def aclose(self) -> None:
        for message_type in self.types:
            if message_type in self.manager.handlers:
                self.manager.handlers.remove(message_type)
        self.buffer.close()
        await trio.lowlevel.checkpoint()


def message_trace_headers(data: Mapping[str, Any]) -> dict[str, str] | None:
    """The W3C trace context a client sent as fields of its message, or ``None``.

    A client continues its trace through the server by adding ``traceparent`` (and
    ``tracestate``) fields to the message; a traced room sink adds them to what it sends.

    Example::

        >>> message_trace_headers({"type": "t", "traceparent": "00-ab-cd-01"})
        {'traceparent': '00-ab-cd-01'}
        >>> message_trace_headers({"type": "t"}) is None
        True
    """
    traceparent = data.get(TRACEPARENT)
    if not isinstance(traceparent, str):
        return None
    tracestate = data.get(TRACESTATE)
    if isinstance(tracestate, str):
        return {TRACEPARENT: traceparent, TRACESTATE: tracestate}
    return {TRACEPARENT: traceparent}


class WebSocketRoomSink(StreamSink):
    """Pipeline output broadcast to a room of a :class:`WebSocketManager`.

    A dict item with a ``"type"`` is broadcast as is; anything else is wrapped as
    ``{"type": message_type, "data": item}``. Broadcasting never waits for clients.

    Example::

        >>> import trio
        >>> from haive.dataflow import StreamingPipeline
        >>> from haive.dataflow.builtins.sources import IterableSource
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     pipeline = StreamingPipeline("ws-out")
        ...     pipeline.set_source(IterableSource([1, 2]))
        ...     pipeline.set_sink(WebSocketRoomSink(manager, "scores"))
        ...     await pipeline.execute()
        ...     return [m["data"] for m in manager.history("scores")]
        >>> trio.run(main)
        [1, 2]
    """

    PLUGIN_NAME = "websocket_room"

    def __init__(
        self, manager: WebSocketManager, room: str, *, message_type: str = "stream_chunk"
    ) -> None:
        check_room(room)
        self.manager = manager
        self.room = room
        self.message_type = message_type
        self.sent = 0

    async def write_batch(self, items: list[Any]) -> None:
        broadcast = self.manager.broadcast_to_room
        trace = outgoing_trace_headers()
        for index, item in enumerate(items):
            if type(item) is dict and isinstance(item.get("type"), str):
                message = item
            else:
                message = {"type": self.message_type, "data": item}
            if trace is not None and (headers := trace[index]) is not None:
                message = {**message, **headers}  # the trace context travels as fields
            await broadcast(self.room, message)
        self.sent += len(items)
