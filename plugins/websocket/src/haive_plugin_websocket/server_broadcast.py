"""Sending from the server side: room broadcasts, streams into a room, direct messages.

Every send only appends to the recipients' outbound queues and never waits for a client,
so a slow client cannot stall a broadcast (its queue's strategy applies, see
:mod:`.server_limits`). Room messages get a per-room sequence number and are kept in the
room's history for recovery. With a backplane the message goes through it and comes back
to every node, this one included, through :meth:`Broadcaster.deliver_room` /
:meth:`Broadcaster.deliver_direct`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from haive.dataflow.errors import SerializationError

from .protocol import JSON, MSGPACK, OutMessage
from .rooms import check_room
from .server_session import _checked

if TYPE_CHECKING:
    from .backplane import Backplane
    from .rooms import RoomTable
    from .server import ServerStats
    from .server_registry import ConnectionRegistry

#: A broadcast never blocks; it lets other tasks run every this many calls so that
#: connection writers get to coalesce what a fast producer queued.
_YIELD_EVERY = 32


class Broadcaster:
    """Sends a server's messages: to a room's members, or to one client, on any node.

    Given the server's rooms (:class:`~haive_plugin_websocket.rooms.RoomTable`, whose
    histories it records room messages in), its connected clients
    (:class:`~haive_plugin_websocket.server_registry.ConnectionRegistry`), its backplane
    (None for a single node) and its stats. Sending only queues: it never waits for a
    client.

    Example (a room nobody is in: the message is numbered and kept for recovery)::

        >>> import trio
        >>> from haive_plugin_websocket import ServerStats
        >>> from haive_plugin_websocket.rooms import RoomTable
        >>> from haive_plugin_websocket.server_registry import ConnectionRegistry
        >>> rooms = RoomTable(history_size=10, max_idle=10)
        >>> broadcaster = Broadcaster(rooms, ConnectionRegistry(), None, ServerStats())
        >>> trio.run(broadcaster.broadcast_to_room, "news", {"type": "headline"})
        >>> [(m.payload, m.seq) for m in rooms.get("news").history.messages]
        [({'type': 'headline', 'room': 'news'}, 1)]
    """

    def __init__(
        self,
        rooms: RoomTable,
        registry: ConnectionRegistry,
        backplane: Backplane | None,
        stats: ServerStats,
    ) -> None:
        self.rooms = rooms
        self.registry = registry
        self.backplane = backplane
        self.stats = stats
        self._since_yield = 0

    async def broadcast_to_room(
        self, room_name: str, message: dict[str, Any] | bytes, *, exclude: str | None = None
    ) -> None:
        """Send ``message`` to every member of ``room_name`` (on every node with a backplane).

        Dict messages get ``"room"`` set and a per-room sequence number (kept in the room's
        history for recovery); bytes go out as binary frames, without history. Never waits
        for a client: slow members' queues apply their strategy. ``exclude`` skips one id.
        """
        check_room(room_name)
        if isinstance(message, bytes | bytearray | memoryview):
            out = OutMessage(bytes(message))
        else:
            if type(message) is not dict or not isinstance(message.get("type"), str):
                _checked(message)  # raises the precise error
            out = OutMessage({**message, "room": room_name})
            _validate(out)
        self.stats.broadcasts += 1
        if self.backplane is not None:
            await self.backplane.publish_room(room_name, out.payload, exclude)
        else:
            if not out.is_binary:
                out.seq = self.rooms.get_or_create(room_name).next_seq()
            self.deliver_room(room_name, out, exclude)
        await self._maybe_yield()

    async def _maybe_yield(self) -> None:
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def deliver_room(self, room_name: str, out: OutMessage, exclude: str | None) -> int:
        """Record and fan out one room message on this node (called by the backplane too)."""
        if out.seq is not None:
            room = self.rooms.get_or_create(room_name)
            room.record(out)
        else:
            found = self.rooms.get(room_name)
            if found is None:
                return 0
            room = found
        delivered = 0
        for cid, session in room.members.items():
            if cid != exclude and session.enqueue(out):
                delivered += 1
        self.stats.deliveries += delivered
        return delivered

    async def stream_to_room(
        self, room_name: str, data_stream: AsyncIterable[Any], *, message_type: str = "stream_chunk"
    ) -> int:
        """Broadcast each item of ``data_stream`` as ``{"type": message_type, "data": item,
        "timestamp": ...}``; returns how many were sent when the stream ends."""
        count = 0
        async for chunk in data_stream:
            await self.broadcast_to_room(
                room_name,
                {"type": message_type, "data": chunk, "timestamp": datetime.now(UTC).isoformat()},
            )
            count += 1
        return count

    async def send_to_client(self, client_id: str, message: dict[str, Any] | bytes) -> bool:
        """Send to one client (on any node with a backplane); False if it is not connected."""
        session = self.registry.get(client_id)
        if session is not None:
            sent = session.send(message)
            await self._maybe_yield()
            return sent
        if self.backplane is not None:
            out = _checked(message)
            _validate(out)
            return await self.backplane.publish_direct(client_id, out.payload)
        await trio.lowlevel.checkpoint_if_cancelled()
        return False

    def deliver_direct(self, client_id: str, payload: dict[str, Any] | bytes) -> bool:
        """Queue a direct message for a client of this node (called by the backplane)."""
        session = self.registry.get(client_id)
        return session.enqueue(OutMessage(payload)) if session is not None else False


def _validate(out: OutMessage) -> None:
    """Encode now (cached for the writers) so that a bad value fails in the caller."""
    if out.is_binary:
        return
    try:
        out.encode(JSON, False)
    except SerializationError:
        out.encode(MSGPACK, False)  # bytes values are fine for MessagePack clients


__all__ = ["Broadcaster"]
