"""Agent token streams to WebSocket clients: ``start_stream`` in, ``agent_response`` out.

The seed's quick start: a client sends ``{"type": "start_stream", "agent_id": ...}``; the
server runs the agent (any coroutine that pushes text, such as an LLM generation) and
streams what it pushes as ``agent_response`` frames to that client, or to every member of
a room the client is in (``"room": ...``).

Each receiver (the client, or each member of the room) gets its own frames: a frame
carries everything pushed since that receiver's previous frame, and the next one goes
once the previous ones were written to its connection (to a room member, also at most one
per ``frame_interval``). A fast receiver gets about one frame per token (per interval in a
room); a slow one fewer, larger frames, and loses nothing: its frames never pile up in the
server's outbound queue (at most one of them waits there), so the ``slow_consumer`` policy
never drops them, unless other traffic to that client alone overflows its queue.

Memory is bounded per receiver: at most ``max_pending`` characters wait for its next frame
(a single push longer than that waits alone). A push that would exceed it waits (the
generation is held back) while no receiver has room: so a single client, or a room whose
members are all slow, paces the agent, never an unbounded queue. In a room where others
keep up, a member that would exceed it is **cut off** instead (stats ``lagging``): it still
gets everything up to that point, then a last frame with ``"reason": "lagging"`` and
``"chars"`` saying where its text ends; it stays connected and the others go on. A member
that joins the room during a stream gets it from its next frame on.

A frame: ``type``, ``agent_id``, ``stream_id``, ``room`` (room streams), ``seq`` (this
receiver's frames of this stream, 0, 1, 2, ... without gaps: a slow member has fewer),
``offset`` (characters of the stream's text before this frame's ``content``), ``content``,
``done``. The last frame has ``"done": true``, ``"chars"`` (``offset`` + ``content`` end)
and a ``"reason"``: ``"complete"``, ``"stopped"`` (the starting client sent
``{"type": "stop_stream", "stream_id": ...}``), ``"error"`` (with ``"error"``, after the
text pushed before it), ``"abandoned"`` (to the room: the starting client left),
``"lagging"`` (see above). A client that leaves has its streams cancelled: the agent is
cancelled, so an LLM provider closes its HTTP stream and the model stops producing.

Frames go to each member's connection directly, so they are not kept in the room's
history for recovery. With a backplane (members on other nodes) a room stream instead
broadcasts one frame per ``frame_interval`` through it, as room messages (a client with
``recovery`` sees the room's ``seq``): there a slow member's ``slow_consumer`` policy applies.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.validation import POSITIVE_INT, duration, invalid

from ._agent_stream_state import Member, Stream
from .server import ClientSession, WebSocketManager

log = logging.getLogger("haive.websocket.agent_streams")

#: ``await agent(request, push)``: ``request`` is the start_stream message (with the
#: client's id as ``client_id``); ``await push(text)`` streams text to the UI.
Agent = Callable[[dict[str, Any], Callable[[str], Awaitable[None]]], Awaitable[Any]]

_stream_ids = itertools.count(1)


@attrs.define
class AgentStreamStats:
    """Counters of :class:`AgentStreams`.

    Example::

        >>> AgentStreamStats().started
        0
    """

    started: int = 0
    completed: int = 0
    stopped: int = 0
    #: Cancelled because their client left.
    abandoned: int = 0
    failed: int = 0
    #: Frames sent, counting each receiver's own (a room of 3 gets 3 per step).
    frames: int = 0
    pushes: int = 0
    #: Times an agent's push waited because no receiver had room for it.
    held_back: int = 0
    #: Room members cut off a stream for lagging ``max_pending`` characters behind.
    lagging: int = 0
    #: The most characters that waited for one receiver's next frame.
    most_pending_chars: int = 0


class AgentStreams:
    """Serves ``start_stream`` / ``stop_stream`` on a :class:`WebSocketManager`.

    ``agent(request, push)`` runs once per ``start_stream``; run the streams with
    ``await nursery.start(streams.run)`` (or ``async with streams.running():``) next to the
    manager. ``max_streams_per_client`` bounds the streams one client has open at once.

    Example::

        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     async def agent(request, push):
        ...         for word in ["Hello", " from ", request["agent_id"]]:
        ...             await push(word)
        ...     streams = AgentStreams(manager, agent)
        ...     async with manager.serving(), streams.running():
        ...         from haive_plugin_websocket import StreamingClient, ConnectionConfig
        ...         client = StreamingClient(ConnectionConfig(url=manager.url))
        ...         text, done = [], trio.Event()
        ...         @client.on_message("agent_response")
        ...         def on_response(message):
        ...             text.append(message["content"])
        ...             if message["done"]:
        ...                 done.set()
        ...         async with client.connect():
        ...             await client.send_message({"type": "start_stream", "agent_id": "analyzer-001"})
        ...             await done.wait()
        ...     return "".join(text)
        >>> trio.run(main)
        'Hello from analyzer-001'
    """

    def __init__(
        self,
        manager: WebSocketManager,
        agent: Agent,
        *,
        max_pending: int = 65536,
        frame_interval: Any = "20ms",
        max_streams_per_client: int = 4,
        message_type: str = "agent_response",
    ) -> None:
        owner = type(self).__name__
        if not isinstance(manager, WebSocketManager):
            raise ConfigError(invalid(owner, "manager", manager, "a WebSocketManager"))
        if not callable(agent):
            raise ConfigError(invalid(owner, "agent", agent, "an async function (request, push)"))
        self.manager = manager
        self.agent = agent
        self.max_pending = POSITIVE_INT.check(owner, "max_pending", max_pending)
        self.frame_interval = duration(owner, "frame_interval", frame_interval, positive=False)
        self.max_streams_per_client = POSITIVE_INT.check(
            owner, "max_streams_per_client", max_streams_per_client
        )
        self.message_type = message_type
        self.streams: dict[str, Stream] = {}
        self.stats = AgentStreamStats()
        self._nursery: trio.Nursery | None = None
        manager.on_message("start_stream")(self._start)
        manager.on_message("stop_stream")(self._stop)
        manager.on_disconnect(self._client_left)

    # -- running -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the streams' tasks until cancelled (then every stream is cancelled)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def running(self) -> Any:
        """``async with streams.running():`` runs :meth:`run` for the block."""
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def scope() -> Any:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()

        return scope()

    # -- protocol ------------------------------------------------------------------------
    def _start(self, client: ClientSession, message: dict[str, Any]) -> dict[str, Any] | None:
        if self._nursery is None:
            client.error("not_serving", "agent streams are not running", message)
            return None
        agent_id = message.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            client.error("invalid_message", "start_stream needs an agent_id string", message)
            return None
        room = message.get("room")
        if room is not None and room not in client.rooms:
            client.error("forbidden", f"join room {room!r} before streaming to it", message)
            return None
        mine = sum(1 for s in self.streams.values() if s.client_id == client.client_id)
        if mine >= self.max_streams_per_client:
            client.error(
                "too_many_streams",
                f"at most {self.max_streams_per_client} streams per client",
                message,
            )
            return None
        stream_id = message.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id or stream_id in self.streams:
            stream_id = f"s{next(_stream_ids)}"
        stream = Stream(stream_id, agent_id, client.client_id, room)
        self.streams[stream_id] = stream
        self.stats.started += 1
        request = {**message, "client_id": client.client_id, "stream_id": stream_id}
        self._nursery.start_soon(self._run_stream, stream, request)
        return {"type": "stream_started", "stream_id": stream_id, "agent_id": agent_id}

    def _stop(self, client: ClientSession, message: dict[str, Any]) -> None:
        stream = self.streams.get(str(message.get("stream_id")))
        if stream is None or stream.client_id != client.client_id:
            client.error("unknown_stream", f"no stream {message.get('stream_id')!r}", message)
            return
        stream.stopped_by_client = True
        stream.scope.cancel()

    def _client_left(self, client: ClientSession) -> None:
        for stream in list(self.streams.values()):
            if stream.client_id == client.client_id:
                stream.scope.cancel()

    # -- one stream ------------------------------------------------------------------------
    async def _run_stream(self, stream: Stream, request: dict[str, Any]) -> None:

        async def push(text: str) -> None:
            if not isinstance(text, str):
                raise TypeError(f"push expects text, got {type(text).__name__}")
            if not text:
                return
            self.stats.pushes += 1
            self._join_new_members(stream)
            if not self._has_room(stream, len(text)):
                self.stats.held_back += 1
                while not self._has_room(stream, len(text)):
                    await stream.has_room.park()
            self._cut_laggards(stream, len(text))
            stream.append(text)
            lags = [stream.lag(m) for m in stream.active()]
            if not lags:
                stream.trim()  # nobody to send it to
            self.stats.most_pending_chars = max(self.stats.most_pending_chars, *lags, 0)
            stream.has_text.unpark_all()

        try:
            with stream.scope:
                async with trio.open_nursery() as nursery:
                    stream.nursery = nursery
                    self._join_first_members(stream)
                    try:
                        await self.agent(request, push)
                    except Exception as exc:
                        # Receivers still get what was pushed before the error.
                        stream.reason = "error"
                        stream.error = f"{type(exc).__name__}: {exc}"
                    stream.finished = True
                    stream.has_text.unpark_all()
            if stream.scope.cancelled_caught:
                stream.reason = "stopped" if stream.stopped_by_client else "abandoned"
        finally:
            del self.streams[stream.stream_id]
        reason = stream.reason
        counter = {"complete": "completed", "stopped": "stopped", "abandoned": "abandoned"}
        setattr(
            self.stats,
            counter.get(reason, "failed"),
            getattr(self.stats, counter.get(reason, "failed")) + 1,
        )
        # Cancelled (stopped, or its client left): the others get their last frame here;
        # otherwise each receiver's own task sent it, none waiting for another.
        for member in list(stream.members.values()):
            if member.gone or member.ended:
                continue
            if reason == "abandoned" and member.client_id == stream.client_id:
                continue  # the starting client is gone
            await self._last_frame(stream, member, reason)

    # -- receivers -----------------------------------------------------------------------
    def _join_first_members(self, stream: Stream) -> None:
        if stream.room is None:
            session = self.manager.clients.get(stream.client_id)
            if session is None:
                stream.scope.cancel()  # the client is gone
                return
            self._feed_member(stream, stream.add(stream.client_id, session))
        elif self.manager.backplane is not None:
            self._feed_member(stream, stream.add("", None))
        else:
            self._join_new_members(stream)

    def _join_new_members(self, stream: Stream) -> None:
        if stream.room is None or self.manager.backplane is not None:
            return
        sessions = self.manager.room_sessions(stream.room)
        if len(sessions) == len(stream.members):
            return  # the common case, checked per push: nobody came or went
        for client_id, member in list(stream.members.items()):
            if sessions.get(client_id) is not member.session:
                stream.drop(member)  # its task sees it gone and ends
        for client_id, session in sessions.items():
            if client_id not in stream.members and not session.closed:
                self._feed_member(stream, stream.add(client_id, session))
        stream.has_text.unpark_all()
        stream.has_room.unpark_all()

    def _feed_member(self, stream: Stream, member: Member) -> None:
        assert stream.nursery is not None
        stream.nursery.start_soon(self._feed, stream, member)

    def _has_room(self, stream: Stream, size: int) -> bool:
        """Some receiver can take ``size`` more characters (or there is none)."""
        active = stream.active()
        return not active or any(self._fits(stream, m, size) for m in active)

    def _fits(self, stream: Stream, member: Member, size: int) -> bool:
        lag = stream.lag(member)
        return lag == 0 or lag + size <= self.max_pending

    def _cut_laggards(self, stream: Stream, size: int) -> None:
        for member in stream.active():
            if not self._fits(stream, member, size):
                stream.cut(member)
                self.stats.lagging += 1
                log.warning(
                    "agent stream %s: room member %s cut off, %d characters behind",
                    stream.stream_id,
                    member.client_id,
                    stream.lag(member),
                )

    def _left(self, stream: Stream, member: Member) -> bool:
        session = member.session
        if session is None:
            return False
        if session.closed:
            return True
        return stream.room is not None and stream.room not in session.rooms

    async def _feed(self, stream: Stream, member: Member) -> None:
        """Send ``member`` its frames until the stream ends or it is cut off or leaves."""
        last_frame = -float("inf")
        try:
            while True:
                while (
                    not member.gone
                    and not stream.lag(member)
                    and member.rest is None
                    and not stream.finished
                ):
                    await stream.has_text.park()
                if member.gone or not stream.lag(member):
                    break
                if stream.room is not None:
                    wait = last_frame + self.frame_interval - trio.current_time()
                    if wait > 0:
                        await trio.sleep(wait)
                # Let its previous frames go out first; meanwhile pushes pile up into this one.
                if member.session is not None:
                    await member.session.flush()
                if member.gone or self._left(stream, member):
                    member.gone = True
                    if stream.room is None:
                        stream.scope.cancel()  # the client is gone
                    break
                offset = member.offset
                text = stream.take(member)
                stream.has_room.unpark_all()
                last_frame = trio.current_time()
                await self._send(stream, member, self._frame(stream, member, offset, text))
            if not member.gone:
                # A member cut off stays (ended) so that it is not taken for a newcomer.
                member.ended = True
                if member.rest is not None:
                    await self._last_frame(stream, member, "lagging")
                else:
                    await self._last_frame(stream, member, stream.reason)
        finally:
            if member.gone:
                stream.drop(member)
                stream.has_room.unpark_all()

    # -- frames --------------------------------------------------------------------------
    def _frame(self, stream: Stream, member: Member, offset: int, content: str) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": self.message_type,
            "agent_id": stream.agent_id,
            "stream_id": stream.stream_id,
            "seq": member.seq,
            "offset": offset,
            "content": content,
            "done": False,
        }
        if stream.room is not None:
            frame["room"] = stream.room
        member.seq += 1
        return frame

    async def _last_frame(self, stream: Stream, member: Member, reason: str) -> None:
        frame = self._frame(stream, member, member.offset, "")
        frame.update(done=True, reason=reason, chars=member.offset)
        if reason == "error":
            frame["error"] = stream.error
        await self._send(stream, member, frame)

    async def _send(self, stream: Stream, member: Member, frame: dict[str, Any]) -> None:
        if member.session is None:
            assert stream.room is not None
            await self.manager.broadcast_to_room(stream.room, frame)
        elif not member.session.send(frame):
            return
        self.stats.frames += 1
