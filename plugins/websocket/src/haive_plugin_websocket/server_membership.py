"""Room membership on the server: join (with recovery replay), leave, members, history.

A join puts the session in the room's local members and answers ``joined`` with the
room's latest sequence number and the server epoch. A client resuming (``since``, with the
``recovery`` feature) then gets, before anything new, the messages it missed that the
room's history (:class:`~haive_plugin_websocket.rooms.RoomHistory`) still holds, or a
``gap`` notice when some are gone or the epoch changed. Members are told ``user_joined``
/ ``user_left``; with a backplane the membership is shared between server nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from .rooms import check_room

if TYPE_CHECKING:
    from .backplane import Backplane
    from .rooms import RoomTable
    from .server_broadcast import Broadcaster
    from .server_registry import ConnectionRegistry
    from .server_session import ClientSession

log = logging.getLogger("haive.websocket.server")


class RoomMembership:
    """Who is in which room, on this node (and on every node through the backplane).

    Given the server's rooms (:class:`~haive_plugin_websocket.rooms.RoomTable`), its
    connected clients, its backplane (None for a single node), the
    :class:`~haive_plugin_websocket.server_broadcast.Broadcaster` that tells members
    ``user_joined`` / ``user_left``, and the server's :attr:`epoch` (which names its room
    histories: a client resuming from another epoch is told ``gap``).

    Example (a single node's membership, before anyone connected)::

        >>> import trio
        >>> from haive_plugin_websocket import ServerStats
        >>> from haive_plugin_websocket.rooms import RoomTable
        >>> from haive_plugin_websocket.server_broadcast import Broadcaster
        >>> from haive_plugin_websocket.server_registry import ConnectionRegistry
        >>> rooms, registry = RoomTable(history_size=10, max_idle=10), ConnectionRegistry()
        >>> broadcaster = Broadcaster(rooms, registry, None, ServerStats())
        >>> membership = RoomMembership(rooms, registry, None, broadcaster, epoch="e1")
        >>> trio.run(membership.members, "news"), membership.rooms
        ([], {})
        >>> trio.run(membership.join_room, "ada", "news")
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.UnknownClientError: no client 'ada' is connected to this server; connected: (none)
    """

    def __init__(
        self,
        rooms: RoomTable,
        registry: ConnectionRegistry,
        backplane: Backplane | None,
        broadcaster: Broadcaster,
        epoch: str,
    ) -> None:
        self._rooms = rooms
        self.registry = registry
        self.backplane = backplane
        self.broadcaster = broadcaster
        #: Names this server's room histories (the backplane's, shared by its nodes).
        self.epoch = epoch

    # -- rooms -------------------------------------------------------------------------------
    async def join(
        self,
        session: ClientSession,
        room_name: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        request_id: Any = None,
    ) -> None:
        already = room_name in session.rooms
        if not already and self.backplane is not None:
            # Shared membership first, so that once the client has its ``joined`` every node
            # lists it; this await comes before the no-await section below.
            await _quietly(self.backplane.add_member(room_name, session.client_id))
            if session.closed:
                await _quietly(self.backplane.remove_member(room_name, session.client_id))
                return
        room = self._rooms.get_or_create(room_name)
        # From here to the replay nothing awaits: a broadcast cannot slip in between, so the
        # client gets what it missed, then everything new, without gaps or duplicates.
        room.members[session.client_id] = session
        self._rooms.active(room_name)
        session.rooms.add(room_name)
        history = room.history
        joined: dict[str, Any] = {
            "type": "joined",
            "room": room_name,
            "latest": history.latest,
            "epoch": self.epoch,
        }
        if request_id is not None:
            joined["id"] = request_id
        session.send(joined)
        if since is not None and session.recovery:
            if epoch is not None and epoch != self.epoch:
                session.send(
                    {
                        "type": "gap",
                        "room": room_name,
                        "since": since,
                        "reason": "epoch",
                        "oldest": history.oldest,
                        "latest": history.latest,
                    }
                )
            else:
                replay = history.since(since)
                if replay.gap:
                    session.send(
                        {
                            "type": "gap",
                            "room": room_name,
                            "since": since,
                            "reason": "too_old",
                            "oldest": replay.oldest,
                            "latest": replay.latest,
                        }
                    )
                for out in replay.messages:
                    session.enqueue(out)
        if already:
            return
        await self.broadcaster.broadcast_to_room(
            room_name, {"type": "user_joined", "user_id": session.client_id, "room": room_name}
        )

    async def leave(
        self, session: ClientSession, room_name: str, *, reply: bool, request_id: Any = None
    ) -> None:
        room = self._rooms.get(room_name)
        was_member = room_name in session.rooms
        session.rooms.discard(room_name)
        if room is not None and room.members.get(session.client_id) is session:
            del room.members[session.client_id]
            self._rooms.touch_idle(room_name)
        if reply:
            left: dict[str, Any] = {"type": "left", "room": room_name}
            if request_id is not None:
                left["id"] = request_id
            session.send(left)
        if not was_member:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        # After a takeover the new connection of this client id is still a member.
        if room is not None and session.client_id in room.members:
            return
        if self.backplane is not None:
            await _quietly(self.backplane.remove_member(room_name, session.client_id))
        await self.broadcaster.broadcast_to_room(
            room_name, {"type": "user_left", "user_id": session.client_id, "room": room_name}
        )

    async def join_room(self, client_id: str, room_name: str) -> None:
        """Put a connected client into a room (it gets ``joined``; members ``user_joined``)."""
        check_room(room_name)
        await self.join(self.registry.session(client_id), room_name)

    async def leave_room(self, client_id: str, room_name: str) -> None:
        """Take a connected client out of a room (it gets ``left``; members ``user_left``)."""
        check_room(room_name)
        await self.leave(self.registry.session(client_id), room_name, reply=True)

    @property
    def rooms(self) -> dict[str, set[str]]:
        """Room name -> ids of this server's members (a snapshot; empty rooms omitted)."""
        return {name: set(room.members) for name, room in self._rooms.rooms.items() if room.members}

    async def members(self, room_name: str) -> list[str]:
        """Ids of the room's members: on every node when a backplane is configured."""
        check_room(room_name)
        if self.backplane is not None:
            return await self.backplane.members(room_name)
        room = self._rooms.get(room_name)
        await trio.lowlevel.checkpoint_if_cancelled()
        return sorted(room.members) if room is not None else []

    def history(self, room_name: str) -> list[dict[str, Any]]:
        """The room's kept messages with their ``seq`` (oldest first), for inspection."""
        room = self._rooms.get(room_name)
        if room is None:
            return []
        return [
            {**m.payload, "seq": m.seq}
            for m in room.history.messages
            if isinstance(m.payload, dict)
        ]


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("backplane call failed")


__all__ = ["RoomMembership"]
