"""Outgoing messages on the client: checked, queued, written in order, coalesced.

Messages are checked (a dict with a ``"type"``, encodable, within ``max_message_size``)
when sent, so a bad one raises in the caller and nothing is queued. They wait in a bounded
queue (``queue_size``, ``queue_policy``) while disconnected; the writer sends what is
queued in order, coalesced into batch frames when the server accepted ``batch``. A batch
cut off by a dropped connection stays in flight and goes first after the reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from websockets.exceptions import ConnectionClosed

from haive.dataflow.runtime.backpressure import BoundedBuffer

from ._connections import HaiveClientConnection, send_frames
from .errors import MessageTooLargeError
from .protocol import Codec, OutMessage, encode_frames

if TYPE_CHECKING:
    from .client import ClientStats
    from .config import ConnectionConfig

_YIELD_EVERY = 32


class OutboundQueue:
    """A client's outgoing messages: checked, queued while disconnected, written in order.

    Given the client's config (``queue_size``, ``queue_policy``, ``max_message_size``,
    ``max_batch_bytes``), its stats and the codec messages are checked with.
    :meth:`prepare` checks a message, :meth:`put` / :meth:`put_nowait` queue it,
    :meth:`writer` writes the queue to one connection until it drops.

    Example::

        >>> import trio
        >>> from haive_plugin_websocket import ClientStats, ConnectionConfig
        >>> from haive_plugin_websocket.protocol import JSON
        >>> outbound = OutboundQueue(ConnectionConfig(url="ws://h/", max_message_size=64), ClientStats(), JSON)
        >>> trio.run(outbound.put, outbound.prepare({"type": "hello"}))
        >>> outbound.queued
        1
        >>> outbound.prepare({"type": "big", "text": "x" * 100})
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.MessageTooLargeError: message of 124 bytes exceeds max_message_size=64
    """

    def __init__(self, config: ConnectionConfig, stats: ClientStats, codec: Codec) -> None:
        self.config = config
        self.stats = stats
        self.codec = codec
        self.buffer: BoundedBuffer[OutMessage] = BoundedBuffer(
            config.queue_size, config.queue_policy, name="websocket-client-out"
        )
        self._inflight: list[OutMessage] | None = None
        self._flushed = trio.Event()
        self._since_yield = 0

    @property
    def queued(self) -> int:
        """Messages waiting to be written (queued while disconnected, or not yet flushed)."""
        return len(self.buffer) + len(self._inflight or ())

    @property
    def dropped(self) -> int:
        """Messages the queue policy dropped (``drop_oldest`` / ``drop_newest``)."""
        return self.buffer.stats.dropped

    def prepare(self, message: Any) -> OutMessage:
        """``message`` checked and encoded: TypeError, ValueError, MessageTooLargeError."""
        if type(message) is not dict:
            raise TypeError(
                f"send_message expects a dict with a 'type', got {type(message).__name__}"
            )
        if not isinstance(message.get("type"), str):
            raise ValueError(f"a message needs a 'type' string, got {message!r:.200}")
        out = OutMessage(message)
        size = len(out.encode(self.codec, False))
        if size > self.config.max_message_size:
            raise MessageTooLargeError(
                f"message of {size} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        return out

    def prepare_binary(self, data: Any) -> OutMessage:
        """Binary ``data`` checked: TypeError, MessageTooLargeError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_binary expects bytes, got {type(data).__name__}")
        if len(data) > self.config.max_message_size:
            raise MessageTooLargeError(
                f"binary message of {len(data)} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        return OutMessage(bytes(data))

    async def put(self, out: OutMessage) -> None:
        """Queue ``out``; with the ``block`` policy wait while the queue is full."""
        buffer = self.buffer
        self._since_yield += 1
        if self._since_yield < _YIELD_EVERY and buffer.room() > 0:
            buffer.put_nowait_batch([out])
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        self._since_yield = 0
        await buffer.put(out)

    def put_nowait(self, out: OutMessage) -> None:
        """Queue ``out`` without waiting; ``trio.WouldBlock`` if a ``block`` queue is full."""
        self.buffer.put_nowait_batch([out])

    async def flush(self, connected: Callable[[], bool]) -> None:
        """Wait until every queued message was written, while ``connected()`` holds."""
        while (len(self.buffer) or self._inflight) and connected():
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    async def writer(self, ws: HaiveClientConnection, wire_codec: Codec, batch: bool) -> None:
        """Write what is queued to ``ws`` until it closes (``batch``: coalesced frames)."""
        buffer = self.buffer
        stats = self.stats
        max_batch_bytes = self.config.max_batch_bytes
        while True:
            items = self._inflight
            if not items:
                items = self._inflight = await buffer.get_batch(8192)
            frames = encode_frames(
                items,
                wire_codec,
                with_seq=False,
                batch=batch,
                max_batch_bytes=max_batch_bytes,
            )
            try:
                await send_frames(ws, frames)
            except ConnectionClosed:
                return  # the batch stays in flight and goes first after the reconnect
            self._inflight = None
            stats.messages_sent += len(items)
            stats.frames_sent += len(frames)
            if not len(buffer):
                self._flushed.set()


__all__ = ["OutboundQueue"]
