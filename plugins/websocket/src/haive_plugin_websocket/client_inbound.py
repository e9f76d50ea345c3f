"""Incoming messages on the client: parse frames, drop replayed duplicates, dispatch.

The reader parses each frame (one message, or a batch), drops room messages whose
sequence number was already seen (a resumed room may replay them), lets the protocol's
own messages (``welcome``, ``joined``, ``left``, ``gap``, ``error``; never one relayed
from another peer, which carries ``from``) update the client's state, completes a pending
request with the reply of the same ``id``, and calls the handler registered with
``@client.on_message(type)``. A failing handler is counted
and logged, never breaking the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from haive.dataflow.errors import SerializationError

from ._connections import HaiveClientConnection
from .protocol import parse_frame

if TYPE_CHECKING:
    from .client import ClientStats
    from .client_events import ConnectionEvents
    from .client_requests import PendingRequests
    from .client_rooms import JoinedRooms
    from .client_state import ConnectionState
    from .handlers import MessageHandler

log = logging.getLogger("haive.websocket.client")

#: An async handler's awaitable, its message and the frame's messages after it.
_Rest = tuple[Awaitable[Any], Any, list[Any]]

#: Message types of the protocol: not counted as unknown when no handler takes them.
_PROTOCOL_TYPES = frozenset(
    {
        "welcome",
        "joined",
        "left",
        "gap",
        "error",
        "pong",
        "members",
        "rooms",
        "user_joined",
        "user_left",
    }
)


class InboundDispatcher:
    """A client's incoming messages: parsed, replays dropped, protocol applied, dispatched.

    Given the URL it is connected to (for log lines), the client's
    :class:`~haive_plugin_websocket.client_state.ConnectionState` (the frame format, and
    the client id a ``welcome`` assigns), its stats, its
    :class:`~haive_plugin_websocket.handlers.MessageHandler`, its
    :class:`~haive_plugin_websocket.client_events.ConnectionEvents` (``gap``), its
    :class:`~haive_plugin_websocket.client_rooms.JoinedRooms` and its
    :class:`~haive_plugin_websocket.client_requests.PendingRequests`. The connection part
    runs :meth:`read` on each connection; :meth:`dispatch` handles one message.

    Example (no connection needed to dispatch)::

        >>> from haive_plugin_websocket import ClientStats, ConnectionConfig, MessageHandler
        >>> from haive_plugin_websocket.client_events import ConnectionEvents
        >>> from haive_plugin_websocket.client_outbound import OutboundQueue
        >>> from haive_plugin_websocket.client_requests import PendingRequests
        >>> from haive_plugin_websocket.client_rooms import JoinedRooms
        >>> from haive_plugin_websocket.client_state import ConnectionState
        >>> from haive_plugin_websocket.protocol import JSON
        >>> config, stats, handlers = ConnectionConfig(url="ws://h/"), ClientStats(), MessageHandler()
        >>> state = ConnectionState(client_id=None, max_batch_bytes=config.max_batch_bytes)
        >>> outbound = OutboundQueue(config, stats, JSON)
        >>> inbound = InboundDispatcher(
        ...     config.url, state, stats, handlers, ConnectionEvents(),
        ...     rooms=JoinedRooms(state, outbound), requests=PendingRequests(state, outbound),
        ... )
        >>> @handlers.on("headline")
        ... def headline(message):
        ...     print(message["text"])
        >>> for message in [
        ...     {"type": "welcome", "client_id": "c-7"},
        ...     {"type": "joined", "room": "news", "latest": 4, "epoch": "e1"},
        ...     {"type": "headline", "room": "news", "seq": 4, "text": "seen already"},
        ...     {"type": "headline", "room": "news", "seq": 5, "text": "new"},
        ... ]:
        ...     inbound.dispatch(message)
        new
        >>> state.client_id, stats.duplicates_dropped
        ('c-7', 1)
    """

    def __init__(
        self,
        url: str,
        state: ConnectionState,
        stats: ClientStats,
        handlers: MessageHandler,
        events: ConnectionEvents,
        *,
        rooms: JoinedRooms,
        requests: PendingRequests,
    ) -> None:
        self.url = url
        self.state = state
        self.stats = stats
        self.handlers = handlers
        self.events = events
        self.rooms = rooms
        self.requests = requests
        # The server's own messages that update the client's state.
        self._protocol: dict[str, Callable[[dict[str, Any]], None]] = {
            "welcome": self._on_welcome,
            "joined": rooms.joined,
            "left": rooms.left,
            "gap": self._on_gap,
            "error": self._on_error,
        }

    async def read(self, ws: HaiveClientConnection) -> None:
        """Read and dispatch ``ws``'s messages until it closes (async handlers awaited)."""
        drain = ws.inbound.drain
        handle = self._handle
        try:
            while True:
                rest = handle(await ws.recv())
                if rest is not None:
                    await self._finish(rest)
                # What arrived with it is handled without a checkpoint per message.
                for raw in drain():
                    rest = handle(raw)
                    if rest is not None:
                        await self._finish(rest)
        except ConnectionClosed:
            return

    def _handle(self, raw: str | bytes) -> _Rest | None:
        """Parse one frame and dispatch its messages, up to the first async handler.

        Not a coroutine: most frames have synchronous handlers only, and this runs per
        received frame. When a handler is async, returns its awaitable, its message and
        the messages after it, for :meth:`_finish` (each async handler is awaited before
        the next message is dispatched).
        """
        try:
            messages = parse_frame(
                raw, msgpack_frames=self.state.msgpack_frames, batch=self.state.batch
            )
        except SerializationError as exc:
            self.stats.invalid_messages += 1
            log.warning("ignored a malformed frame from %s: %s", self.url, exc)
            return None
        self.stats.messages_received += len(messages)
        dispatch = self.dispatch
        for i, message in enumerate(messages):
            result = dispatch(message)
            if result is not None:  # an async handler
                return result, message, messages[i + 1 :]
        return None

    async def _finish(self, rest: _Rest) -> None:
        """Await an async handler, then dispatch the frame's other messages in order."""
        result, message, later = rest
        while True:
            try:
                await result
            except Exception:
                self.stats.handler_errors += 1
                log.exception("message handler for %r failed", message.get("type"))
            for i, message in enumerate(later):
                pending = self.dispatch(message)
                if pending is not None:
                    result, later = pending, later[i + 1 :]
                    break
            else:
                return

    def dispatch(self, message: Any) -> Awaitable[Any] | None:
        """Handle one message; returns the awaitable of an async handler (None otherwise)."""
        if type(message) is not dict:
            self.stats.invalid_messages += 1
            return None
        mtype = message.get("type")
        if type(mtype) is not str:
            self.stats.invalid_messages += 1
            return None
        seq = message.get("seq")
        room = message.get("room")
        # A room that is not a string (another server implementation may send anything)
        # is none of ours: not a replay, and never used as a key.
        if type(seq) is int and type(room) is str and self.rooms.already_seen(room, seq):
            self.stats.duplicates_dropped += 1
            return None
        internal = self._protocol.get(mtype)
        if internal is not None and "from" not in message:
            # Only the server's own messages update the client's state: one relayed from
            # another peer (it has a "from") must never change our id or room positions.
            internal(message)
        if "id" in message:  # only a reply can complete a request
            self.requests.complete(message)
        route = self.handlers.route(mtype)
        if route is None:
            if internal is None and mtype not in _PROTOCOL_TYPES:
                self.stats.unknown_types += 1
            return None
        fn, is_async = route
        try:
            result = fn(message)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("message handler for %r failed", mtype)
            return None
        return result if is_async else None

    # -- protocol messages -------------------------------------------------------------------------
    def _on_welcome(self, message: dict[str, Any]) -> None:
        client_id = message.get("client_id")
        if isinstance(client_id, str):
            self.state.client_id = client_id

    def _on_gap(self, message: dict[str, Any]) -> None:
        self.events.emit("gap", detail=dict(message))

    def _on_error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code"))
        self.stats.server_errors[code] += 1
        log.warning("server error %s: %s", code, message.get("message"))
        room = message.get("room")
        ref = message.get("ref_type")
        if isinstance(room, str) and ref == "join":
            self.rooms.refused(room, code, str(message.get("message")))


__all__ = ["InboundDispatcher"]
