"""Rooms: members, per-room sequence numbers and the bounded history used for recovery."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import attrs

from .errors import InvalidRoomError
from .protocol import OutMessage, valid_room

if TYPE_CHECKING:
    from .server_session import ClientSession


@attrs.frozen
class Replay:
    """What a client re-joining a room after ``since`` gets back.

    ``messages`` are the ones it missed that the history still holds; ``gap`` is True when
    some it missed are gone (older than the history, or from another server epoch).
    """

    messages: list[OutMessage]
    gap: bool
    oldest: int | None
    latest: int


class RoomHistory:
    """The last ``maxlen`` messages of a room with their sequence numbers.

    Example::

        >>> history = RoomHistory(maxlen=3)
        >>> for seq in range(1, 6):
        ...     history.append(OutMessage({"type": "m", "n": seq}, seq))
        >>> replay = history.since(3)
        >>> [m.seq for m in replay.messages], replay.gap
        ([4, 5], False)
        >>> replay = history.since(1)
        >>> [m.seq for m in replay.messages], replay.gap, replay.oldest
        ([3, 4, 5], True, 3)
    """

    __slots__ = ("latest", "messages")

    def __init__(self, maxlen: int) -> None:
        self.messages: deque[OutMessage] = deque(maxlen=maxlen)
        self.latest = 0

    def append(self, message: OutMessage) -> None:
        assert message.seq is not None
        if self.messages.maxlen:
            self.messages.append(message)
        self.latest = message.seq

    @property
    def oldest(self) -> int | None:
        return self.messages[0].seq if self.messages else None

    def since(self, seq: int) -> Replay:
        """Messages after ``seq``; ``gap`` if the ones right after ``seq`` are gone."""
        latest = self.latest
        if seq >= latest:
            return Replay([], seq > latest, self.oldest, latest)
        messages = self.messages
        oldest = self.oldest
        missed = [m for m in messages if m.seq is not None and m.seq > seq]
        gap = oldest is None or oldest > seq + 1
        return Replay(missed, gap, oldest, latest)


class Room:
    """One room on one server: its local members and its history.

    Example::

        >>> room = Room("lobby", history_size=10)
        >>> room.next_seq(), room.next_seq()
        (1, 2)
    """

    __slots__ = ("_seq", "history", "members", "name")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        self.members: dict[str, ClientSession] = {}
        self.history = RoomHistory(history_size)
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, message: OutMessage) -> None:
        """Keep ``message`` (which has a seq) in the history."""
        if message.seq is not None:
            if message.seq > self._seq:
                self._seq = message.seq
            self.history.append(message)


class RoomTable:
    """Every room a server knows, with empty rooms kept (for recovery) up to a bound.

    A room without members keeps its history so that a client coming back can resume;
    at most ``max_idle`` such rooms are kept, the least recently emptied go first.

    Example::

        >>> table = RoomTable(history_size=10, max_idle=1)
        >>> _ = table.get_or_create("a"); table.touch_idle("a")
        >>> _ = table.get_or_create("b"); table.touch_idle("b")
        >>> sorted(table.rooms)
        ['b']
    """

    def __init__(self, *, history_size: int, max_idle: int) -> None:
        self.rooms: dict[str, Room] = {}
        self.history_size = history_size
        self.max_idle = max_idle
        self._idle: OrderedDict[str, None] = OrderedDict()

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def get_or_create(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.history_size)
            self.touch_idle(name)
        return room

    def touch_idle(self, name: str) -> None:
        """Call when a room may have become empty (or was created empty)."""
        room = self.rooms.get(name)
        if room is None:
            return
        if room.members:
            self._idle.pop(name, None)
            return
        self._idle[name] = None
        self._idle.move_to_end(name)
        while len(self._idle) > self.max_idle:
            oldest, _ = self._idle.popitem(last=False)
            self.rooms.pop(oldest, None)

    def active(self, name: str) -> None:
        """Call when a room got a member."""
        self._idle.pop(name, None)

    def snapshot(self) -> dict[str, Any]:
        return {name: sorted(room.members) for name, room in self.rooms.items() if room.members}


def check_room(room_name: str) -> None:
    """Raise InvalidRoomError, saying what is allowed, unless ``room_name`` is a room name.

    Example::

        >>> check_room("news")
        >>> check_room("")
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.InvalidRoomError: invalid room name '': use 1-128 letters, digits or _.:@/+- starting with a letter or digit
    """
    if not valid_room(room_name):
        raise InvalidRoomError(
            f"invalid room name {room_name!r}: use 1-128 letters, digits or _.:@/+- "
            "starting with a letter or digit"
        )
