"""The protocol's control messages on the server, and the room authorization they pass.

``join`` (with ``since``/``epoch`` to resume), ``leave``, ``members``, ``rooms``,
``publish`` (to a joined room), ``direct`` (to another client) and ``ping`` are handled
here; their replies carry the request's ``id``. What ``publish`` and ``direct`` relay can
never pass for the server's own messages: the protocol's types are refused
(``reserved_type``) and ``from``/``room``/``seq`` are set by the server. Joining and publishing are authorized by
every ``haive_websocket_authorize_room`` plugin hook and by the manager's
``authorize_room(info, room, action)`` callback (sync or async): any ``False``, or a
failing check, denies.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from haive.dataflow.errors import SerializationError

from .protocol import SERVER_FIELDS, SERVER_TYPES, valid_room
from .server_session import ClientInfo

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server_membership import RoomMembership
    from .server_session import ClientSession

log = logging.getLogger("haive.websocket.server")

AuthorizeFn = Callable[[ClientInfo, str, str], Any]


class _ControlMixin:
    """Part of :class:`~haive_plugin_websocket.server.WebSocketManager`: control messages."""

    if TYPE_CHECKING:
        config: ServerConfig
        authorize_room: AuthorizeFn | None

        _membership: RoomMembership

        async def members(self, room_name: str) -> list[str]: ...

        async def broadcast_to_room(
            self, room_name: str, message: dict[str, Any] | bytes, *, exclude: str | None = None
        ) -> None: ...

        async def send_to_client(self, client_id: str, message: dict[str, Any] | bytes) -> bool: ...

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
        return room  # type: ignore[return-value]

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
            if not await self._authorized(session, room, "join"):
                session.error("forbidden", f"not allowed to join room {room!r}", message)
                return
        since = message.get("since")
        if not (isinstance(since, int) and not isinstance(since, bool) and since >= 0):
            since = None
        epoch = message.get("epoch")
        await self._membership.join(
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
        await self._membership.leave(session, room, reply=True, request_id=message.get("id"))

    async def _c_members(self, session: ClientSession, message: dict[str, Any]) -> None:
        room = self._room_of(session, message)
        if room is None:
            return
        reply = {"type": "members", "room": room, "members": await self.members(room)}
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
        if not await self._authorized(session, room, "publish"):
            session.error("forbidden", f"not allowed to publish to room {room!r}", message)
            return
        exclude = None if message.get("echo") else session.client_id
        await self.broadcast_to_room(room, relayed, exclude=exclude)

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
            sent = await self.send_to_client(target, relayed)
        except SerializationError as exc:  # e.g. MessagePack-only values for a JSON client
            session.error("invalid_message", f"cannot relay to {target!r:.80}: {exc}", message)
            return
        if not sent:
            session.error("unknown_client", f"no connected client {target!r:.80}", message)

    # -- authorization ---------------------------------------------------------------------
    async def _authorized(self, session: ClientSession, room: str, action: str) -> bool:
        from haive.dataflow.plugins import get_registry

        from .hookspecs import room_verdicts

        try:
            verdicts = room_verdicts(
                get_registry().plugin_manager, client=session.info, room=room, action=action
            )
        except Exception:
            log.exception("haive_websocket_authorize_room failed; denying %s on %r", action, room)
            return False
        if any(v is False for v in verdicts):
            return False
        if self.authorize_room is not None:
            try:
                verdict = self.authorize_room(session.info, room, action)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                log.exception("authorize_room failed; denying %s on %r", action, room)
                return False
            if not verdict:
                return False
        await trio.lowlevel.checkpoint_if_cancelled()
        return True


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
