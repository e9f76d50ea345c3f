"""The resilient WebSocket client: typed handlers, reconnect, heartbeat, queue, recovery.

This module is the facade: :class:`StreamingClient` (its configuration, registration,
state and ``connect()``) composes one part per concern, each an object in its own module
with its own state, given the :class:`.ConnectionState` they share and the other parts it
works with:

* :mod:`.client_connection`: connecting, reconnecting with backoff
  (:func:`reconnect_delay`), the heartbeat, giving up, closing
  (:class:`.ConnectionSupervisor`);
* :mod:`.client_outbound`: checking, queueing and writing outgoing messages
  (:class:`.OutboundQueue`);
* :mod:`.client_inbound`: parsing and dispatching incoming messages
  (:class:`.InboundDispatcher`);
* :mod:`.client_rooms`: joining rooms, resumed after reconnects (:class:`.JoinedRooms`);
* :mod:`.client_requests`: requests and their replies (:class:`.PendingRequests`);
* :mod:`.client_events`: :class:`ConnectionEvent` and its observers
  (:class:`.ConnectionEvents`);
* :mod:`.client_state`: what the parts share about the connection (the socket, the
  accepted features, the wire codec and batching, the client id, the failure):
  :class:`.ConnectionState`.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from ._connections import unwrap_single_error
from .client_connection import ConnectionSupervisor
from .client_connection import reconnect_delay as reconnect_delay
from .client_events import EVENT_KINDS as EVENT_KINDS
from .client_events import ConnectionEvent as ConnectionEvent
from .client_events import ConnectionEvents
from .client_inbound import InboundDispatcher
from .client_outbound import OutboundQueue
from .client_requests import PendingRequests
from .client_rooms import JoinedRooms
from .client_state import ConnectionState
from .config import ConnectionConfig
from .errors import ConnectionFailedError, RoomAccessError
from .handlers import MessageHandler
from .protocol import JSON, MSGPACK, OutMessage

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define
class ClientStats:
    """Counters of one client.

    Example::

        >>> ClientStats().reconnects
        0
    """

    connects: int = 0
    reconnects: int = 0
    messages_sent: int = 0
    frames_sent: int = 0
    messages_received: int = 0
    duplicates_dropped: int = 0
    unknown_types: int = 0
    invalid_messages: int = 0
    handler_errors: int = 0
    heartbeat_timeouts: int = 0
    server_errors: Counter[str] = attrs.field(factory=Counter)


class StreamingClient:
    """A WebSocket client that stays connected: the seed's ``StreamingClient`` on trio.

    * ``@client.on_message("type")`` registers ``handler(message)`` (sync or async);
      ``"*"`` catches other types, ``"binary"`` gets binary frames as ``message["data"]``.
    * ``async with client.connect():`` connects (waiting for the first connection) and
      keeps reconnecting with exponential backoff and jitter until the block ends;
      ``await nursery.start(client.run)`` does the same in your own nursery.
    * :meth:`send_message` / :meth:`send_binary` queue messages; while disconnected they
      wait in a bounded queue (``queue_size``, ``queue_policy``) and go out in order after
      the reconnect. Queued messages travel coalesced in batch frames when the server
      accepted the ``batch`` feature.
    * A heartbeat ping every ``heartbeat_interval`` detects a dead peer; the client then
      drops the connection and reconnects.
    * :meth:`join` / :meth:`leave` rooms; rooms are re-joined after a reconnect, resuming
      from the last sequence number seen, so missed room messages are replayed once.
    * ``open_stream`` (optional) opens the transport for each attempt instead of a TCP
      connection to the URL's host (a Unix socket, a proxy tunnel, an in-memory stream).
    * ``@client.on_event("reconnected")`` (or ``"*"``) observes :class:`ConnectionEvent`\\ s;
      :attr:`events` keeps the recent ones and :attr:`stats` counts.

    Example::

        >>> import trio
        >>> from haive_plugin_websocket import WebSocketManager
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     async with manager.serving():
        ...         client = StreamingClient(ConnectionConfig(url=manager.url))
        ...         async with client.connect():
        ...             await client.join("news")
        ...             await manager.broadcast_to_room("news", {"type": "headline", "text": "hi"})
        ...             done = trio.Event()
        ...             @client.on_message("headline")
        ...             def headline(message):
        ...                 print(message["text"], message["room"])
        ...                 done.set()
        ...             await done.wait()
        >>> trio.run(main)
        hi news
    """

    def __init__(
        self,
        config: ConnectionConfig | str,
        *,
        rng: random.Random | None = None,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        if isinstance(config, str):
            config = ConnectionConfig(url=config)
        self.config = config
        self.handlers = MessageHandler()
        self.stats = ClientStats()
        self._events = ConnectionEvents()
        self._state = ConnectionState(
            client_id=config.client_id, max_batch_bytes=config.max_batch_bytes
        )
        self._codec = MSGPACK if config.serializer == "msgpack" else JSON
        self._outbound = OutboundQueue(config, self.stats, self._codec)
        self._rooms = JoinedRooms(self._state, self._outbound)
        self._requests = PendingRequests(self._state, self._outbound)
        self._inbound = InboundDispatcher(
            config.url,
            self._state,
            self.stats,
            self.handlers,
            self._events,
            rooms=self._rooms,
            requests=self._requests,
        )
        self._connection = ConnectionSupervisor(
            config,
            self._state,
            self.stats,
            self._events,
            outbound=self._outbound,
            inbound=self._inbound,
            rooms=self._rooms,
            requests=self._requests,
            rng=rng or random.Random(),
            open_stream=open_stream,
        )

    # -- registration --------------------------------------------------------------------
    def on_message(self, message_type: str) -> Callable[[F], F]:
        """Decorator: ``handler(message)`` for messages of ``message_type`` (``"*"``: others)."""
        return self.handlers.on(message_type)

    def on_event(self, kind: str = "*") -> Callable[[F], F]:
        """Decorator: ``fn(event)`` for connection events of ``kind`` (``"*"``: all)."""
        return self._events.on_event(kind)

    @property
    def events(self) -> deque[ConnectionEvent]:
        """The recent :class:`ConnectionEvent`\\ s, oldest first (at most 256)."""
        return self._events.history

    # -- state -----------------------------------------------------------------------------
    @property
    def client_id(self) -> str | None:
        """This client's id: the configured one, or the one the server assigned."""
        return self._state.client_id

    @property
    def features(self) -> frozenset[str]:
        """Protocol features the server accepted on the current (or last) connection."""
        return self._state.features

    @property
    def failed(self) -> ConnectionFailedError | None:
        """Why the client gave up reconnecting (None while it keeps trying)."""
        return self._state.failed

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._state.connected

    @property
    def queued(self) -> int:
        """Messages waiting to be written (queued while disconnected, or not yet flushed)."""
        return self._outbound.queued

    @property
    def dropped(self) -> int:
        """Messages the queue policy dropped (``drop_oldest`` / ``drop_newest``)."""
        return self._outbound.dropped

    @property
    def rooms(self) -> list[str]:
        """Rooms this client is in (or will re-join on reconnect)."""
        return self._rooms.names

    @property
    def extensions(self) -> list[str]:
        """WebSocket extensions negotiated on the current connection (``permessage-deflate``)."""
        ws = self._state.ws
        return [ext.name for ext in ws.protocol.extensions] if ws is not None else []

    @property
    def latency(self) -> float:
        """Round-trip time measured by the last heartbeat, in seconds (0 before one)."""
        ws = self._state.ws
        return ws.latency if ws is not None else 0.0

    # -- sending ---------------------------------------------------------------------------
    async def send_message(self, message: dict[str, Any]) -> None:
        """Queue a message (a dict with a ``"type"``); sent now, or after the reconnect.

        Encoding errors and oversize messages raise here (nothing is queued). With the
        ``block`` queue policy this waits while the queue is full. While the queue has room
        it is a cancel point every 16 messages and a schedule point every 1,024, not on
        every call: a sending loop pays about 0.75 us per message instead of 5.
        """
        # The hot path of a sending loop: _prepare's two steps inline.
        failed = self._state.failed
        if failed is not None:
            raise failed
        await self._outbound.send(message)

    def send_message_nowait(self, message: dict[str, Any]) -> None:
        """Queue a message without waiting; ``trio.WouldBlock`` if a ``block`` queue is full."""
        self._outbound.put_nowait(self._prepare(message))

    async def send_binary(self, data: bytes) -> None:
        """Queue binary data: a binary frame (``{"type": "binary"}`` with MessagePack)."""
        out = self._outbound.prepare_binary(data)
        self._state.check()
        await self._outbound.put(out)

    async def flush(self) -> None:
        """Wait until every queued message was written to the connection."""
        await self._outbound.flush(lambda: self._state.connected)

    def _prepare(self, message: Any) -> OutMessage:
        self._state.check()
        return self._outbound.prepare(message)

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected); raise if the client gave up."""
        await self._state.wait_connected()

    # -- rooms and requests ----------------------------------------------------------------------
    async def join(self, room: str, *, wait: bool = True) -> None:
        """Join ``room`` (re-joined automatically after reconnects).

        With ``wait`` it returns once the server confirmed, raising
        :class:`~haive_plugin_websocket.errors.RoomAccessError` if it refused.
        """
        await self._rooms.join(room, wait=wait)

    async def leave(self, room: str) -> None:
        """Leave ``room`` (and stop re-joining it)."""
        await self._rooms.leave(room)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a control request and wait for the server's reply (matched by ``"id"``)."""
        return await self._requests.request(message)

    async def members(self, room: str) -> list[str]:
        """Ids of the members of ``room`` (across every server node)."""
        reply = await self.request({"type": "members", "room": room})
        if reply.get("type") == "error":
            raise RoomAccessError(room, str(reply.get("code")), str(reply.get("message")))
        return list(reply.get("members", []))

    async def publish(self, room: str, message: dict[str, Any], *, echo: bool = False) -> None:
        """Broadcast ``message`` to a room this client joined (``echo``: to itself too)."""
        await self.send_message({"type": "publish", "room": room, "message": message, "echo": echo})

    async def direct(self, client_id: str, message: dict[str, Any]) -> None:
        """Send ``message`` to another client through the server."""
        await self.send_message({"type": "direct", "to": client_id, "message": message})

    # -- connection ----------------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[StreamingClient] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, and reconnect whenever the connection drops, until :meth:`close`.

        With ``nursery.start`` it returns once first connected. After giving up it sets
        :attr:`failed`, emits ``gave_up`` and returns (or raises, if never connected).
        """
        await self._connection.run(lambda: task_status.started(self))

    async def close(self) -> None:
        """Flush what is queued (for up to ``close_timeout``), close, stop reconnecting."""
        await self._connection.close()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[StreamingClient]:
        """``async with client.connect():`` connected inside the block, closed after it.

        Raises :class:`~haive_plugin_websocket.errors.ConnectionFailedError` if the first
        connection cannot be made within ``max_reconnect_attempts``.
        """
        with unwrap_single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self.close()

    async def __aenter__(self) -> StreamingClient:
        self._cm = self.connect()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._cm.__aexit__(*exc_info)
