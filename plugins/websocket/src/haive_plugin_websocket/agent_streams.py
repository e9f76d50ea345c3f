"""Agent token streams to WebSocket clients: ``start_stream`` in, ``agent_response`` out.

The seed's quick start: a client sends ``{"type": "start_stream", "agent_id": ...}``; the
server runs the agent (any coroutine that pushes text, such as an LLM generation) and
streams what it pushes as ``agent_response`` frames to that client, or to a room the client
is in (``"room": ...``). A frame carries everything pushed since the previous one:

* to a client, the next frame goes once the previous ones were written to its connection,
  so a fast client gets about one frame per token and a slow one fewer, larger frames;
* to a room, at most one frame per ``frame_interval`` (members are many; each still has the
  server's own bounded outbound queue).

What waits for a frame is bounded by ``max_pending`` characters per stream: beyond it the
agent's ``push`` waits (the generation is held back), never an unbounded queue. The last
frame has ``"done": true`` and a ``"reason"``: ``"complete"``, ``"stopped"`` (the client
sent ``{"type": "stop_stream", "stream_id": ...}``), ``"error"`` (with ``"error"``). A client
that leaves has its streams cancelled: the agent is cancelled, so an LLM provider closes its
HTTP stream and the model stops producing.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.validation import POSITIVE_INT, duration, invalid

from .server import ClientSession, WebSocketManager

#: ``await agent(request, push)``: ``request`` is the start_stream message (with the
#: client's id as ``client_id``); ``await push(text)`` streams text to the UI.
Agent = Callable[[dict[str, Any], Callable[[str], Awaitable[None]]], Awaitable[Any]]

_stream_ids = itertools.count(1)


@attrs.define(eq=False)
class _Stream:
    stream_id: str
    agent_id: str
    client_id: str
    room: str | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    pending: list[str] = attrs.field(factory=list)
    pending_chars: int = 0
    finished: bool = False
    seq: int = 0
    chars_sent: int = 0
    has_text: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    has_room: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    stopped_by_client: bool = False


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
    frames: int = 0
    pushes: int = 0
    #: Times an agent's push waited because ``max_pending`` characters were waiting.
    held_back: int = 0
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
        self.streams: dict[str, _Stream] = {}
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
        stream = _Stream(stream_id, agent_id, client.client_id, room)
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
    async def _run_stream(self, stream: _Stream, request: dict[str, Any]) -> None:
        reason, error = "complete", None

        async def push(text: str) -> None:
            if not isinstance(text, str):
                raise TypeError(f"push expects text, got {type(text).__name__}")
            if not text:
                return
            self.stats.pushes += 1
            if stream.pending_chars >= self.max_pending:
                self.stats.held_back += 1
                while stream.pending_chars >= self.max_pending:
                    await stream.has_room.park()
            stream.pending.append(text)
            stream.pending_chars += len(text)
            self.stats.most_pending_chars = max(self.stats.most_pending_chars, stream.pending_chars)
            stream.has_text.unpark_all()

        try:
            with stream.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_frames, stream)
                    try:
                        await self.agent(request, push)
                    except Exception as exc:
                        reason, error = "error", f"{type(exc).__name__}: {exc}"
                        nursery.cancel_scope.cancel()
                    stream.finished = True
                    stream.has_text.unpark_all()
            if stream.scope.cancelled_caught:
                reason = "stopped" if stream.stopped_by_client else "abandoned"
        finally:
            del self.streams[stream.stream_id]
        counter = {"complete": "completed", "stopped": "stopped", "abandoned": "abandoned"}
        setattr(
            self.stats,
            counter.get(reason, "failed"),
            getattr(self.stats, counter.get(reason, "failed")) + 1,
        )
        if reason != "abandoned":
            last = self._frame(stream, "")
            last.update(done=True, reason=reason, chars=stream.chars_sent)
            if error is not None:
                last["error"] = error
            await self._send(stream, last)

    def _frame(self, stream: _Stream, content: str) -> dict[str, Any]:
        frame = {
            "type": self.message_type,
            "agent_id": stream.agent_id,
            "stream_id": stream.stream_id,
            "seq": stream.seq,
            "content": content,
            "done": False,
        }
        stream.seq += 1
        return frame

    async def _send(self, stream: _Stream, frame: dict[str, Any]) -> None:
        if stream.room is not None:
            await self.manager.broadcast_to_room(stream.room, frame)
        else:
            await self.manager.send_to_client(stream.client_id, frame)
        self.stats.frames += 1

    async def _send_frames(self, stream: _Stream) -> None:
        last_frame = -float("inf")
        while True:
            while not stream.pending and not stream.finished:
                await stream.has_text.park()
            if not stream.pending:
                return
            # Let the previous frames go out first; meanwhile pushes pile up into this one.
            if stream.room is None:
                session = self.manager.clients.get(stream.client_id)
                if session is None:
                    stream.scope.cancel()  # the client is gone
                    return
                await session.flush()
            else:
                wait = last_frame + self.frame_interval - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
            text = "".join(stream.pending)
            stream.pending.clear()
            stream.pending_chars = 0
            stream.has_room.unpark_all()
            stream.chars_sent += len(text)
            last_frame = trio.current_time()
            await self._send(stream, self._frame(stream, text))
