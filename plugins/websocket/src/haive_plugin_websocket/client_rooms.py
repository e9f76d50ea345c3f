"""Rooms and requests on the client: join, leave, members, publish, direct.

A room the client joined is remembered with the last sequence number and server epoch
seen, so that after a reconnect it is re-joined from there and the server replays what
was missed. :meth:`_RoomsMixin.request` sends a control request and waits for the reply
with the same ``id``; waiters are woken with the client's failure if it gives up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .errors import InvalidRoomError, RoomAccessError
from .protocol import OutMessage, valid_room

if TYPE_CHECKING:
    import itertools

    from .client_state import ConnectionState


class _RoomState:
    __slots__ = ("epoch", "error", "joined", "last_seq")

    def __init__(self) -> None:
        self.joined = trio.Event()
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self.error: RoomAccessError | None = None


class _Pending:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: dict[str, Any] | None = None


class _RoomsMixin:
    """Part of :class:`~haive_plugin_websocket.client.StreamingClient`: rooms and requests."""

    if TYPE_CHECKING:
        _state: ConnectionState
        _rooms: dict[str, _RoomState]
        _pending: dict[int, _Pending]
        _ids: itertools.count[int]

        def _prepare(self, message: Any) -> OutMessage: ...

        async def _enqueue(self, out: OutMessage) -> None: ...

        async def send_message(self, message: dict[str, Any]) -> None: ...

    def _join_message(self, room: str, state: _RoomState, *, resume: bool) -> OutMessage:
        message: dict[str, Any] = {"type": "join", "room": room}
        if resume and state.last_seq is not None:
            message["since"] = state.last_seq
            if state.epoch is not None:
                message["epoch"] = state.epoch
        return OutMessage(message)

    # -- rooms ---------------------------------------------------------------------------------------------
    async def join(self, room: str, *, wait: bool = True) -> None:
        """Join ``room`` (re-joined automatically after reconnects).

        With ``wait`` it returns once the server confirmed, raising
        :class:`~haive_plugin_websocket.errors.RoomAccessError` if it refused.
        """
        if not valid_room(room):
            raise InvalidRoomError(f"invalid room name {room!r}")
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _RoomState()
        state.error = None
        if self._state.ws is not None:
            state.joined = trio.Event()
            await self._enqueue(self._join_message(room, state, resume=True))
        if wait:
            await state.joined.wait()
            if state.error is not None:
                raise state.error
            self._state.check()

    async def leave(self, room: str) -> None:
        """Leave ``room`` (and stop re-joining it)."""
        if self._rooms.pop(room, None) is not None and self._state.ws is not None:
            await self._enqueue(OutMessage({"type": "leave", "room": room}))
        else:
            await trio.lowlevel.checkpoint()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a control request and wait for the server's reply (matched by ``"id"``)."""
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        await self._enqueue(self._prepare({**message, "id": request_id}))
        await pending.done.wait()
        if pending.value is None:
            assert self._state.failed is not None
            raise self._state.failed
        return pending.value

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
