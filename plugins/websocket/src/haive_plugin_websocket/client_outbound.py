"""Outgoing messages on the client: checked, queued, written in order, coalesced.

Messages are checked (a dict with a ``"type"``, encodable, within ``max_message_size``)
when sent, so a bad one raises in the caller and nothing is queued. They wait in a bounded
queue (``queue_size``, ``queue_policy``) while disconnected; the writer sends what is
queued in order, coalesced into batch frames when the server accepted ``batch``. A batch
cut off by a dropped connection stays in flight and goes first after the reconnect.

The queue is a plain deque, not the core's ``BoundedBuffer``: a client sending in a loop
pays for every put, and a put here is an append (and a wake-up only when the writer
waits), where the general buffer's per-put bookkeeping cost several microseconds per
message, ten times what the asyncio baseline spends on the whole message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from websockets.exceptions import ConnectionClosed

from ._connections import HaiveClientConnection, send_frames
from .errors import MessageTooLargeError
from .protocol import JSON, Codec, OutMessage, encode_frames, json_dumps

if TYPE_CHECKING:
    from .client import ClientStats
    from .config import ConnectionConfig

#: A sender that never has to wait lets the writer run every this many messages: often
#: enough to keep the connection busy, rarely enough that the writer takes many messages
#: at once (one batch frame, one syscall) instead of a task switch per few messages.
_YIELD_EVERY = 1024
#: ... and looks for a cancellation every this many messages: a put that has room never
#: waits, so a cancelled sender stops within this many messages, and the check (a
#: coroutine, the current task, its cancel status) is not paid on each of them.
_CANCEL_EVERY = 16
#: The most messages the writer takes from the queue at once.
_WRITE_CHUNK = 8192


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
        self._queue: deque[OutMessage | bytes] = deque()
        self._size = config.queue_size
        self._max_size = config.max_message_size
        self._policy = config.queue_policy
        self._dropped = 0
        # Every connection of this client speaks JSON (msgpack is never offered): a sent
        # message is queued as its JSON bytes, no OutMessage around it.
        self._json_only = codec is JSON and "msgpack" not in config.offered_features
        # The writer parks in _not_empty (and says so: a flag is cheaper to look at than
        # the lot), blocked senders in _not_full; both are woken only
        # when someone waits (an empty ParkingLot is falsy), never per message.
        self._not_empty = trio.lowlevel.ParkingLot()
        self._writer_waiting = False
        self._not_full = trio.lowlevel.ParkingLot()
        self._inflight: list[OutMessage | bytes] | None = None
        self._flushed = trio.Event()
        self._since_yield = 0

    @property
    def queued(self) -> int:
        """Messages waiting to be written (queued while disconnected, or not yet flushed)."""
        return len(self._queue) + len(self._inflight or ())

    @property
    def dropped(self) -> int:
        """Messages the queue policy dropped (``drop_oldest`` / ``drop_newest``)."""
        return self._dropped

    def prepare(self, message: Any) -> OutMessage:
        """``message`` checked and encoded: TypeError, ValueError, MessageTooLargeError."""
        if type(message) is not dict:
            raise TypeError(
                f"send_message expects a dict with a 'type', got {type(message).__name__}"
            )
        if not isinstance(message.get("type"), str):
            raise ValueError(f"a message needs a 'type' string, got {message!r:.200}")
        if self.codec is JSON:
            data = json_dumps(message)
            out = OutMessage(message, json=data)
        else:
            out = OutMessage(message)
            data = out.encode(self.codec, False)
        if len(data) > self._max_size:
            raise MessageTooLargeError(
                f"message of {len(data)} bytes exceeds max_message_size={self.config.max_message_size}"
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

    async def send(self, message: Any) -> None:
        """:meth:`prepare` and :meth:`put` in one call: a sending loop's path per message.

        Written out flat: each call and coroutine less is a tenth of a microsecond less
        per message, and a client sending in a loop spends little else.
        """
        queue = self._queue
        if type(message) is dict and self._json_only and len(queue) < self._size:
            mtype = message.get("type")
            if type(mtype) is str:
                data = json_dumps(message)
                if len(data) <= self._max_size:
                    queue.append(data)
                    if self._writer_waiting:
                        self._wake_writer()
                    since = self._since_yield = self._since_yield + 1
                    if since >= _YIELD_EVERY:
                        self._since_yield = 0
                        await trio.lowlevel.checkpoint()
                    elif not since % _CANCEL_EVERY:
                        await trio.lowlevel.checkpoint_if_cancelled()
                    return
        await self.put(self.prepare(message))  # anything else: the checked, general path

    async def _after_put(self) -> None:
        since = self._since_yield = self._since_yield + 1
        if since >= _YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()
        elif not since % _CANCEL_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()

    def _wake_writer(self) -> None:
        self._writer_waiting = False  # one wake-up, not one per message until it runs
        self._not_empty.unpark()

    async def put(self, out: OutMessage) -> None:
        """Queue ``out``; with the ``block`` policy wait while the queue is full.

        A cancel point every ``_CANCEL_EVERY`` messages and a schedule point every
        ``_YIELD_EVERY`` when there is room; when it has to wait, both.
        """
        queue = self._queue
        if len(queue) < self._size:
            queue.append(out)
            if self._writer_waiting:
                self._wake_writer()
            await self._after_put()
            return
        if self._policy != "block":
            self._overflow(out)
            await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(queue) >= self._size:
            await self._not_full.park()
        queue.append(out)
        if self._writer_waiting:
            self._wake_writer()
        self._since_yield = 0
        await trio.lowlevel.cancel_shielded_checkpoint()

    def put_nowait(self, out: OutMessage) -> None:
        """Queue ``out`` without waiting; ``trio.WouldBlock`` if a ``block`` queue is full."""
        queue = self._queue
        if len(queue) < self._size:
            queue.append(out)
            if self._writer_waiting:
                self._wake_writer()
        elif self._policy == "block":
            raise trio.WouldBlock
        else:
            self._overflow(out)

    def _overflow(self, out: OutMessage | bytes) -> None:
        # A full queue under a dropping policy: the newest message (this one) or the oldest
        # queued one goes, counted either way.
        self._dropped += 1
        if self._policy == "drop_oldest":
            self._queue.popleft()
            self._queue.append(out)
            if self._writer_waiting:
                self._wake_writer()

    def _take(self) -> list[OutMessage | bytes]:
        queue = self._queue
        if len(queue) <= _WRITE_CHUNK:
            items = list(queue)
            queue.clear()
        else:
            popleft = queue.popleft
            items = [popleft() for _ in range(_WRITE_CHUNK)]
        if self._not_full:
            self._not_full.unpark_all()
        return items

    async def flush(self, connected: Callable[[], bool]) -> None:
        """Wait until every queued message was written, while ``connected()`` holds."""
        while (self._queue or self._inflight) and connected():
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    async def writer(self, ws: HaiveClientConnection, wire_codec: Codec, batch: bool) -> None:
        """Write what is queued to ``ws`` until it closes (``batch``: coalesced frames)."""
        stats = self.stats
        max_batch_bytes = self.config.max_batch_bytes
        while True:
            items = self._inflight
            if not items:
                while not self._queue:
                    self._writer_waiting = True
                    try:
                        await self._not_empty.park()
                    finally:
                        self._writer_waiting = False
                items = self._inflight = self._take()
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
            if not self._queue:
                self._flushed.set()


__all__ = ["OutboundQueue"]
