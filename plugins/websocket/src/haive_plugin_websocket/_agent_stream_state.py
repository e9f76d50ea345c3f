"""The text of one agent stream and where each of its receivers is in it.

A stream keeps what its agent pushed as a log of chunks, shared by its receivers: each
:class:`Member` has a cursor (the first chunk not yet in one of its frames), and the log
keeps only what the least advanced receiver still needs. A member cut off for lagging
gets its own copy of what it still had coming (at most ``max_pending`` characters) and
leaves the shared log, so a stalled receiver never holds the log's memory.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from .server_session import ClientSession


@attrs.define(eq=False)
class Member:
    """One receiver of a stream (``session`` None: the room through the backplane)."""

    client_id: str
    session: ClientSession | None
    #: Absolute index of the first chunk not yet in one of its frames.
    cursor: int
    #: Characters of the stream's text before its next frame's content.
    offset: int
    seq: int = 0
    #: Cut off for lagging: the text it still gets before its last frame.
    rest: str | None = None
    #: Left (disconnected or left the room).
    gone: bool = False
    #: Got its last frame (cut off for lagging).
    ended: bool = False


@attrs.define(eq=False)
class Stream:
    """One running stream: its log of pushed text and its receivers.

    Example (a fast and a slow receiver; the log keeps what the slow one still needs)::

        >>> stream = Stream("s1", "agent", "ada", "desk")
        >>> fast, slow = stream.add("fast", None), stream.add("slow", None)
        >>> stream.append("Hel"); stream.append("lo")
        >>> stream.take(fast), stream.lag(slow), list(stream.chunks)
        ('Hello', 5, ['Hel', 'lo'])
        >>> stream.append("!")
        >>> stream.take(slow), stream.take(fast), list(stream.chunks)
        ('Hello!', '!', [])
    """

    stream_id: str
    agent_id: str
    client_id: str
    room: str | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    chunks: deque[str] = attrs.field(factory=deque)
    #: Absolute index of ``chunks[0]``.
    base: int = 0
    #: Characters pushed so far.
    total: int = 0
    members: dict[str, Member] = attrs.field(factory=dict)
    nursery: trio.Nursery | None = None
    finished: bool = False
    #: Why it ended: complete, error (with ``error``), stopped, abandoned.
    reason: str = "complete"
    error: str | None = None
    has_text: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    has_room: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    stopped_by_client: bool = False

    def add(self, client_id: str, session: ClientSession | None) -> Member:
        """A new receiver that gets what is pushed from now on."""
        member = Member(client_id, session, self.base + len(self.chunks), self.total)
        self.members[client_id] = member
        return member

    def lag(self, member: Member) -> int:
        """Characters waiting for ``member``'s next frame."""
        if member.rest is not None:
            return len(member.rest)
        return self.total - member.offset

    def active(self) -> list[Member]:
        """Receivers that follow the shared log (not cut off, not gone)."""
        return [m for m in self.members.values() if m.rest is None and not m.gone]

    def append(self, text: str) -> None:
        self.chunks.append(text)
        self.total += len(text)

    def take(self, member: Member) -> str:
        """Everything waiting for ``member``: its next frame's content."""
        if member.rest is not None:
            text, member.rest = member.rest, ""
        else:
            text = "".join(itertools.islice(self.chunks, member.cursor - self.base, None))
            member.cursor = self.base + len(self.chunks)
            self.trim()
        member.offset += len(text)
        return text

    def cut(self, member: Member) -> None:
        """Take ``member`` off the shared log with a copy of what it still gets."""
        member.rest = "".join(itertools.islice(self.chunks, member.cursor - self.base, None))
        self.trim()

    def drop(self, member: Member) -> None:
        """``member`` left: forget it and what only it still needed."""
        member.gone = True
        if self.members.get(member.client_id) is member:
            del self.members[member.client_id]
        self.trim()

    def trim(self) -> None:
        """Forget chunks every active receiver already has."""
        active = self.active()
        keep_from = min((m.cursor for m in active), default=self.base + len(self.chunks))
        while self.base < keep_from:
            self.chunks.popleft()
            self.base += 1
