"""Outgoing messages on the client: checked, queued, written in order, coalesced.

Messages are checked (a dict with a ``"type"``, encodable, within ``max_message_size``)
when sent, so a bad one raises in the caller and nothing is queued. They wait in a bounded
queue (``queue_size``, ``queue_policy``) while disconnected; the writer sends what is
queued in order, coalesced into batch frames when the server accepted ``batch``. A batch
cut off by a dropped connection stays in flight and goes first after the reconnect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from websockets.exceptions import ConnectionClosed

from ._connections import HaiveClientConnection, send_frames
from .errors import ConnectionFailedError, MessageTooLargeError
from .protocol import Codec, OutMessage, encode_frames

if TYPE_CHECKING:
    from haive.dataflow.runtime.backpressure import BoundedBuffer

    from .client import ClientStats
    from .config import ConnectionConfig

_YIELD_EVERY = 32


class _OutboundMixin:
    """Part of :class:`~haive_plugin_websocket.client.StreamingClient`: outgoing messages."""

    if TYPE_CHECKING:
        config: ConnectionConfig
        stats: ClientStats
        failed: ConnectionFailedError | None
        _codec: Codec
        _wire_codec: Codec
        _batch: bool
        _outbound: BoundedBuffer[OutMessage]
        _inflight: list[OutMessage] | None
        _flushed: trio.Event
        _ws: HaiveClientConnection | None
        _since_yield: int

    async def flush(self) -> None:
        """Wait until every queued message was written to the connection."""
        while (len(self._outbound) or self._inflight) and self._ws is not None:
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    # -- tasks -----------------------------------------------------------------------------------
    async def _writer(self, ws: HaiveClientConnection) -> None:
        buffer = self._outbound
        stats = self.stats
        max_batch_bytes = self.config.max_batch_bytes
        while True:
            items = self._inflight
            if not items:
                items = self._inflight = await buffer.get_batch(8192)
            frames = encode_frames(
                items,
                self._wire_codec,
                with_seq=False,
                batch=self._batch,
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

    # -- sending ---------------------------------------------------------------------------------------
    def _prepare(self, message: Any) -> OutMessage:
        if self.failed is not None:
            raise self.failed
        if type(message) is not dict:
            raise TypeError(
                f"send_message expects a dict with a 'type', got {type(message).__name__}"
            )
        if not isinstance(message.get("type"), str):
            raise ValueError(f"a message needs a 'type' string, got {message!r:.200}")
        out = OutMessage(message)
        size = len(out.encode(self._codec, False))
        if size > self.config.max_message_size:
            raise MessageTooLargeError(
                f"message of {size} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        return out

    async def _enqueue(self, out: OutMessage) -> None:
        buffer = self._outbound
        self._since_yield += 1
        if self._since_yield < _YIELD_EVERY and buffer.room() > 0:
            buffer.put_nowait_batch([out])
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        self._since_yield = 0
        await buffer.put(out)

    async def send_message(self, message: dict[str, Any]) -> None:
        """Queue a message (a dict with a ``"type"``); sent now, or after the reconnect.

        Encoding errors and oversize messages raise here (nothing is queued). With the
        ``block`` queue policy this waits while the queue is full.
        """
        await self._enqueue(self._prepare(message))

    def send_message_nowait(self, message: dict[str, Any]) -> None:
        """Queue a message without waiting; ``trio.WouldBlock`` if a ``block`` queue is full."""
        self._outbound.put_nowait_batch([self._prepare(message)])

    async def send_binary(self, data: bytes) -> None:
        """Queue binary data: a binary frame (``{"type": "binary"}`` with MessagePack)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_binary expects bytes, got {type(data).__name__}")
        if len(data) > self.config.max_message_size:
            raise MessageTooLargeError(
                f"binary message of {len(data)} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        if self.failed is not None:
            raise self.failed
        await self._enqueue(OutMessage(bytes(data)))
