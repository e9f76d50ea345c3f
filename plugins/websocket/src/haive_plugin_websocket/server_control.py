"""The protocol's control messages on the server.

``join`` (with ``since``/``epoch`` to resume), ``leave``, ``members``, ``rooms``,
``publish`` (to a joined room), ``direct`` (to another client) and ``ping`` are handled
here; their replies carry the request's ``id``. What ``publish`` and ``direct`` relay can
never pass for the server's own messages: the protocol's types are refused
(``reserved_type``) and ``from``/``room``/``seq`` are set by the server. Joining and
publishing are authorized by :class:`~.server_authorization.RoomAuthorization`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from haive.dataflow.errors import SerializationError

from .protocol import SERVER_FIELDS, SERVER_TYPES, valid_room

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server_authorization import RoomAuthorization
    from .server_broadcast import Broadcaster
    from .server_membership import RoomMembership
    from .server_session import ClientSession



class ControlMessages:
    """The server's side of the protocol's control messages, one method per type.

    Given the server's config (``max_rooms_per_client``), its
    :class:`~haive_plugin_websocket.server_membership.RoomMembership`,
    :class:`~haive_plugin_websocket.server_broadcast.Broadcaster` and
    :class:`~haive_plugin_websocket.server_authorization.RoomAuthorization`.
    :attr:`handlers` maps each control type to ``handler(session, message)``; bad
    requests are answered with ``{"type": "error"}`` frames.

    Example::

        >>> from haive_plugin_websocket import ServerConfig, ServerStats
        >>> from haive_plugin_websocket.rooms import RoomTable
        >>> from haive_plugin_websocket.server_authorization import RoomAuthorization
        >>> from haive_plugin_websocket.server_broadcast import Broadcaster
        >>> from haive_plugin_websocket.server_membership import RoomMembership
        >>> from haive_plugin_websocket.server_registry import ConnectionRegistry
        >>> rooms, registry = RoomTable(history_size=10, max_idle=10), ConnectionRegistry()
        >>> broadcaster = Broadcaster(rooms, registry, None, ServerStats())
        >>> membership = RoomMembership(rooms, registry, None, broadcaster, epoch="e1")
        >>> control = ControlMessages(ServerConfig(), membership, broadcaster, RoomAuthorization())
        >>> sorted(control.handlers)
        ['direct', 'join', 'leave', 'members', 'ping', 'publish', 'rooms']
    """

    def __init__(
        self,
        config: ServerConfig,
        membership: RoomMembership,
        broadcaster: Broadcaster,
        authorization: RoomAuthorization,
    ) -> None:
        self.config = config
        self.membership = membership
        self.broadcaster = broadcaster
        self.authorization = authorization
        self.handlers: dict[str, Callable[[ClientSession, dict[str, Any]], Awaitable[None]]] = {
            "join": self._c_join,
            "leave": self._c_leave,
            "members": self._c_members,
            "rooms": self._c_rooms,
            "publish": self._c_publish,
            "direct": self._c_direct,
            "ping": self._c_ping,
        }

    # -- control messages ------------------------------------------------------------------
    def _room_of(self, session: ClientSession, message: dict[str, Any]) -> str | None:
        room = message.get("room")
        if not valid_room(room):
            session.error(
                "invalid_room",
                f"invalid room name {room!r:.80}: use 1-128 letters, digits or _.:@/+- "
                "starting with a letter or digit",
                message,
            )
            return None
        return room

    async def _c_join(self, session: ClientSession, message: dict[str, Any]) -> None:
        room = self._room_of(session, message)
        if room is None:
            return
        if room not in session.rooms:
            if len(session.rooms) >= self.config.max_rooms_per_client:
                session.error(
                    "too_many_rooms",
                    f"a client may be in at most {self.config.max_rooms_per_client} rooms",
                    message,
                )
                return
            if not await self.authorization.allowed(session.info, room, "join"):
                session.error("forbidden", f"not allowed to join room {room!r}", message)
                return
        since = message.get("since")
        if not (isinstance(since, int) and not isinstance(since, bool) and since >= 0):
            since = None
        epoch = message.get("epoch")
        await self.membership.join(
            session,
            room,
            since=since,
            epoch=epoch if isinstance(epoch, str) else None,
            request_id=message.get("id"),
        )

    async def _c_leave(self, session: ClientSession, message: dict[str, Any]) -> None:
        room = self._room_of(session, message)
        if room is None:
            return
        await self.membership.leave(session, room, reply=True, request_id=message.get("id"))

    async def _c_members(self, session: ClientSession, message: dict[str, Any]) -> None:
        room = self._room_of(session, message)
        if room is None:
            return
        reply = {"type": "members", "room": room, "members": await self.membership.members(room)}
        _with_id(reply, message)
        session.send(reply)

    async def _c_rooms(self, session: ClientSession, message: dict[str, Any]) -> None:
        reply = {"type": "rooms", "rooms": sorted(session.rooms)}
        _with_id(reply, message)
        session.send(reply)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _c_ping(self, session: ClientSession, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        _with_id(reply, message)
        session.send(reply)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _c_publish(self, session: ClientSession, message: dict[str, Any]) -> None:
        room = self._room_of(session, message)
        if room is None:
            return
        inner = message.get("message")
        if type(inner) is not dict or not isinstance(inner.get("type"), str):
            session.error(
                "invalid_message",
                "publish needs 'message': an object with a 'type' string",
                message,
            )
            return
        relayed = _relayable(session, inner, message)
        if relayed is None:
            return
        if room not in session.rooms:
            session.error("forbidden", f"join room {room!r} before publishing to it", message)
            return
        if not await self.authorization.allowed(session.info, room, "publish"):
            session.error("forbidden", f"not allowed to publish to room {room!r}", message)
            return
        exclude = None if message.get("echo") else session.client_id
        await self.broadcaster.broadcast_to_room(room, relayed, exclude=exclude)

    async def _c_direct(self, session: ClientSession, message: dict[str, Any]) -> None:
        target = message.get("to")
        inner = message.get("message")
        if (
            not isinstance(target, str)
            or type(inner) is not dict
            or not isinstance(inner.get("type"), str)
        ):
            session.error(
                "invalid_message",
                "direct needs 'to' (a client id) and 'message' (an object with a 'type')",
                message,
            )
            return
        relayed = _relayable(session, inner, message)
        if relayed is None:
            return
        try:
            sent = await self.broadcaster.send_to_client(target, relayed)
        except SerializationError as exc:  # e.g. MessagePack-only values for a JSON client
            session.error("invalid_message", f"cannot relay to {target!r:.80}: {exc}", message)
            return
        if not sent:
            session.error("unknown_client", f"no connected client {target!r:.80}", message)


def _relayable(
    session: ClientSession, inner: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any] | None:
    """``inner`` as the server relays it from ``session`` (None, with an error frame, if
    its type is one only the server may send)."""
    mtype = inner["type"]
    if mtype in SERVER_TYPES:
        session.error(
            "reserved_type",
            f"cannot relay a message of type {mtype!r}: only the server sends "
            f"{', '.join(sorted(SERVER_TYPES))}",
            request,
        )
        return None
    relayed = {key: value for key, value in inner.items() if key not in SERVER_FIELDS}
    relayed["from"] = session.client_id
    return relayed


def _with_id(reply: dict[str, Any], request: dict[str, Any]) -> None:
    if "id" in request:
        reply["id"] = request["id"]


__all__ = ["ControlMessages"]
