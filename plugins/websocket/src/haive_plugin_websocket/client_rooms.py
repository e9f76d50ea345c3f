"""The rooms a client is in: join, leave, and where it is in each, across reconnects.

A room the client joined is remembered with the last sequence number and server epoch
seen, so that after a reconnect it is re-joined from there and the server replays what
was missed; a replayed message seen already is recognised by its sequence number. Waiters
for a join are woken with the client's failure if it gives up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .errors import InvalidRoomError, RoomAccessError
from .protocol import OutMessage, valid_room

if TYPE_CHECKING:
    from .client_outbound import OutboundQueue
    from .client_state import ConnectionState


class _RoomState:
    __slots__ = ("epoch", "error", "joined", "last_seq")

    def __init__(self) -> None:
        self.joined = trio.Event()
        self.last_seq: int | None = None
        self.epoch: str | None = None
        self.error: RoomAccessError | None = None


class JoinedRooms:
    """A client's rooms, each with the last sequence number and server epoch seen.

    Given the client's :class:`~haive_plugin_websocket.client_state.ConnectionState` and
    its :class:`~haive_plugin_websocket.client_outbound.OutboundQueue` (``join`` and
    ``leave`` go out in order with everything else). :meth:`join` / :meth:`leave` are the
    client's; the incoming part reports the server's answers (:meth:`joined`,
    :meth:`left`, :meth:`refused`) and asks :meth:`already_seen` of each room message;
    the connection part sends :meth:`resume_messages` first on every connection and calls
    :meth:`connection_lost` and :meth:`wake_waiters`.

    Example (joined while disconnected, then the server's answer and two messages)::

        >>> import trio
        >>> from haive_plugin_websocket import ClientStats, ConnectionConfig
        >>> from haive_plugin_websocket.client_outbound import OutboundQueue
        >>> from haive_plugin_websocket.client_state import ConnectionState
        >>> from haive_plugin_websocket.protocol import JSON
        >>> config = ConnectionConfig(url="ws://h/")
        >>> state = ConnectionState(client_id=None, max_batch_bytes=config.max_batch_bytes)
        >>> rooms = JoinedRooms(state, OutboundQueue(config, ClientStats(), JSON))
        >>> async def join_later():
        ...     await rooms.join("news", wait=False)
        >>> trio.run(join_later)
        >>> rooms.joined({"type": "joined", "room": "news", "latest": 41, "epoch": "e1"})
        >>> rooms.already_seen("news", 41), rooms.already_seen("news", 42), rooms.names
        (True, False, ['news'])
        >>> [out.payload for out in rooms.resume_messages()]
        [{'type': 'join', 'room': 'news', 'since': 42, 'epoch': 'e1'}]
    """

    def __init__(self, state: ConnectionState, outbound: OutboundQueue) -> None:
        self._state = state
        self._outbound = outbound
        self._rooms: dict[str, _RoomState] = {}

    @property
    def names(self) -> list[str]:
        """The rooms joined (or to re-join on reconnect), sorted."""
        return sorted(self._rooms)

    # -- the client's requests ---------------------------------------------------------------
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
        if self._state.connected:
            state.joined = trio.Event()
            await self._outbound.put(_join_message(room, state))
        if wait:
            await state.joined.wait()
            if state.error is not None:
                raise state.error
            self._state.check()

    async def leave(self, room: str) -> None:
        """Leave ``room`` (and stop re-joining it)."""
        if self._rooms.pop(room, None) is not None and self._state.connected:
            await self._outbound.put(OutMessage({"type": "leave", "room": room}))
        else:
            await trio.lowlevel.checkpoint()

    # -- the server's answers ---------------------------------------------------------------
    def joined(self, message: dict[str, Any]) -> None:
        """The server's ``joined``: the room's epoch and position; wakes :meth:`join`."""
        room = message.get("room")
        if not isinstance(room, str):
            return
        state = self._rooms.get(room)
        if state is None:  # joined by the server (manager.join_room)
            state = self._rooms[room] = _RoomState()
        epoch = message.get("epoch")
        seq = message.get("latest")
        if state.last_seq is None or state.epoch != epoch:
            # A fresh join, or a new server epoch: count from the room's current position.
            state.last_seq = seq if type(seq) is int else None
        state.epoch = epoch if isinstance(epoch, str) else None
        state.error = None
        state.joined.set()

    def left(self, message: dict[str, Any]) -> None:
        """The server's ``left``: the room is forgotten (not re-joined)."""
        room = message.get("room")
        if isinstance(room, str):
            self._rooms.pop(room, None)

    def refused(self, room: str, code: str, reason: str) -> None:
        """The server refused to let this client join ``room``; :meth:`join` raises."""
        state = self._rooms.pop(room, None)
        if state is not None:
            state.error = RoomAccessError(room, code, reason)
            state.joined.set()

    def already_seen(self, room: str, seq: int) -> bool:
        """True if message ``seq`` of ``room`` came already (a replay); else remember it."""
        state = self._rooms.get(room)
        if state is None:
            return False
        if state.last_seq is not None and seq <= state.last_seq:
            return True
        state.last_seq = seq
        return False

    # -- the connection -----------------------------------------------------------------------
    def resume_messages(self) -> list[OutMessage]:
        """``join`` for every room, resuming from the last message seen."""
        return [_join_message(room, state) for room, state in self._rooms.items()]

    def connection_lost(self) -> None:
        """Rooms joined on the lost connection wait for their re-join to be confirmed."""
        for state in self._rooms.values():
            if state.joined.is_set():
                state.joined = trio.Event()

    def wake_waiters(self) -> None:
        """Wake every :meth:`join` waiting (the client gave up: they raise its failure)."""
        for state in self._rooms.values():
            state.joined.set()


def _join_message(room: str, state: _RoomState) -> OutMessage:
    message: dict[str, Any] = {"type": "join", "room": room}
    if state.last_seq is not None:
        message["since"] = state.last_seq
        if state.epoch is not None:
            message["epoch"] = state.epoch
    return OutMessage(message)


__all__ = ["JoinedRooms"]
