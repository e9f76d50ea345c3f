"""One connected client on the server: who it is (:class:`ClientInfo`) and its session.

A :class:`ClientSession` owns its connection's bounded outbound queue (the core's
``BoundedBuffer``) and the writer task that drains it, which exists only while something
is queued and coalesces what is queued into batch frames when the client negotiated
``batch``. Sending never waits for the client; closing flushes briefly first, except for a
slow consumer, whose TCP connection is dropped. The connection's handler task
(:meth:`~.server_lifecycle.ConnectionLifecycle.handle`) hands every frame to the server's
:class:`~.server_incoming.IncomingRouter`; the session's rate limit and outbound strategy
come from :class:`~.server_limits.ConnectionLimits`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
import trio
from websockets.exceptions import ConnectionClosed

from haive.dataflow.errors import SerializationError

from ._connections import HaiveServerConnection, send_frames, write_now
from .protocol import CLOSE_SLOW_CONSUMER, JSON, MSGPACK, OutMessage, encode_frames

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server import ServerStats
    from .server_limits import ConnectionLimits

log = logging.getLogger("haive.websocket.server")

#: The most queued messages a writer takes at once.
_WRITE_CHUNK = 4096


@attrs.frozen
class ClientInfo:
    """Who a connection is: what authorization hooks and handlers see.

    ``identity`` is what the ``authenticate`` callback returned for the client's token
    (``None`` without authentication); ``features`` the protocol extensions negotiated.

    Example::

        >>> ClientInfo("client-1", identity={"user": "ada"}).client_id
        'client-1'
    """

    client_id: str
    identity: Any = None
    features: frozenset[str] = frozenset()
    path: str = "/"
    remote_address: Any = None


class ClientSession:
    """One connected client as the server's handlers see it.

    ``send`` / ``send_binary`` queue a message for this client and never block; ``rooms``
    are the rooms it is in; ``info`` carries its id, identity and negotiated features.
    Handlers receive the session first and the message second::

        @manager.on_message("echo")
        async def echo(client: ClientSession, message: dict) -> dict:
            return {"type": "echo", "text": message["text"]}   # sent back to the client

    Example (the session of a client connected to a running server)::

        >>> import trio
        >>> from haive_plugin_websocket import StreamingClient, ConnectionConfig, WebSocketManager
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     async with manager.serving():
        ...         config = ConnectionConfig(url=manager.url, client_id="ada")
        ...         async with StreamingClient(config).connect():
        ...             session = manager.clients["ada"]
        ...             return session.client_id, sorted(session.info.features)
        >>> trio.run(main)
        ('ada', ['batch', 'recovery'])
    """

    def __init__(
        self,
        ws: HaiveServerConnection,
        info: ClientInfo,
        *,
        config: ServerConfig,
        stats: ServerStats,
        limits: ConnectionLimits,
    ) -> None:
        self.config = config
        self.stats = stats
        self.limits = limits
        self.ws = ws
        self.info = info
        self.client_id = info.client_id
        #: The key of the identity this client id is bound to (None without authentication).
        self.owner: str | None = None
        self.rooms: set[str] = set()
        features = info.features
        self.msgpack = "msgpack" in features
        self.codec = MSGPACK if self.msgpack else JSON
        self.batch = "batch" in features
        self.recovery = "recovery" in features
        #: This connection's rate limit (None when the server has none).
        self.flood = limits.flood_control(trio.current_time())
        # The outbound queue and its writer task exist only while there is something to
        # send: an idle connection costs websockets' connection and this object, no more.
        # A plain deque: a room broadcast appends to every member's, and the core's
        # BoundedBuffer cost several times the append in bookkeeping per message. Its
        # bound and slow-consumer policy are applied here (_overflow).
        self._out: deque[OutMessage] | None = None
        self._limit = config.outbound_queue
        self._policy = config.slow_consumer
        self._writing = False
        self._written: trio.Event | None = None
        self._dropped = 0
        self._kick: tuple[int, str] | None = None
        self.closed = False

    @property
    def outbound(self) -> deque[OutMessage] | None:
        """The outbound queue (oldest first) while messages wait in it (None when idle)."""
        return self._out

    @property
    def queued(self) -> int:
        """Messages waiting to be written to this client."""
        return len(self._out) if self._out is not None else 0

    @property
    def rate_dropped(self) -> int:
        """Messages from this client dropped over the rate limit."""
        return self.flood.dropped if self.flood is not None else 0

    @property
    def closing(self) -> bool:
        """True once this connection was asked to close (it may still be flushing)."""
        return self._kick is not None

    @property
    def dropped(self) -> int:
        """Messages the outbound queue's strategy dropped for this (slow) client."""
        return self._dropped

    def snapshot(self) -> dict[str, Any]:
        """This connection's counters now: outbound ``queued`` and ``dropped`` (by the
        slow-consumer strategy), ``rate_dropped`` (over the rate limit), its ``rooms``."""
        return {
            "queued": self.queued,
            "dropped": self._dropped,
            "rate_dropped": self.rate_dropped,
            "rooms": sorted(self.rooms),
        }

    @property
    def extensions(self) -> list[str]:
        """WebSocket extensions negotiated with this client (``permessage-deflate``)."""
        return [ext.name for ext in self.ws.protocol.extensions]

    def __repr__(self) -> str:
        return f"<ClientSession {self.client_id!r} rooms={sorted(self.rooms)}>"

    # -- sending -----------------------------------------------------------------------
    def enqueue(self, message: OutMessage) -> bool:
        """Queue an already built message; False if the connection is gone."""
        if self.closed:
            return False
        out = self._out
        if out is None:
            out = self._out = deque()
        if len(out) < self._limit:
            out.append(message)
        else:
            self._overflow(out, message)
        if not self._writing:
            self._writing = True
            self.ws.nursery.start_soon(self._writer)
        return True

    def _overflow(self, out: deque[OutMessage], message: OutMessage) -> None:
        # The client does not keep up: the slow_consumer policy decides.
        if self._policy == "disconnect":
            self.limits.slow_consumer(self)  # the message is not queued; the client resumes
            return
        if self._policy == "drop_oldest":
            out.popleft()
            out.append(message)
        # drop_newest: the message itself goes. Counted when it happens, so that a slow
        # client shows while still connected.
        self._dropped += 1
        self.stats.dropped_outbound += 1

    def send(self, message: dict[str, Any] | bytes) -> bool:
        """Queue ``message`` (a dict with a ``"type"``, or bytes) for this client.

        Never blocks: when the client is too slow its queue strategy applies. Returns False
        if the connection is already closed. A value that cannot be encoded raises
        SerializationError here, not later.
        """
        out = _checked(message)
        if not out.is_binary:
            out.encode(self.codec, False)
        return self.enqueue(out)

    def send_binary(self, data: bytes) -> bool:
        """Queue a binary message (a binary frame, or ``{"type": "binary"}`` in msgpack)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_binary expects bytes, got {type(data).__name__}")
        return self.enqueue(OutMessage(bytes(data)))

    def error(self, code: str, message: str, ref: Any = None, *, count: bool = True) -> None:
        """Count an error and tell the client with an ``{"type": "error"}`` frame."""
        if count:
            self.stats.errors[code] += 1
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if type(ref) is dict:
            for key, name in (("id", "id"), ("type", "ref_type"), ("room", "room")):
                value = ref.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    frame[name] = value
        self.enqueue(OutMessage(frame))

    async def flush(self) -> None:
        """Wait until everything queued for this client was written to its connection."""
        while self._writing and not self.closed:
            if self._written is None:
                self._written = trio.Event()
            await self._written.wait()
        await trio.lowlevel.checkpoint()

    # -- closing -----------------------------------------------------------------------
    def kick(self, code: int, reason: str) -> None:
        """Ask for this connection to be closed with ``code`` (idempotent, never blocks)."""
        if self._kick is None and not self.closed:
            self._kick = (code, reason)
            self.ws.nursery.start_soon(self._close, code, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this connection (queued messages are flushed first, briefly)."""
        self.kick(code, reason)
        await trio.lowlevel.checkpoint()

    async def _close(self, code: int, reason: str) -> None:
        ws = self.ws
        if code != CLOSE_SLOW_CONSUMER:
            # Let the writer flush what is queued (an error frame saying why) first.
            with trio.move_on_after(0.25):
                await self.flush()
            with trio.move_on_after(self.config.close_timeout):
                await ws.aclose(code, reason)
        # A slow consumer does not read: its socket buffer is full, a close frame would
        # never get through. Drop the TCP connection; the client resumes with recovery.
        # The reader then sees the connection closed and the session ends.
        await trio.aclose_forcefully(ws.stream)

    # -- tasks -------------------------------------------------------------------------
    async def _writer(self) -> None:
        ws = self.ws
        stats = self.stats
        max_batch_bytes = self.config.max_batch_bytes
        try:
            while True:
                buffer = self._out
                if not buffer:
                    break  # drained: the writer retires until the next message
                if len(buffer) <= _WRITE_CHUNK:
                    items = list(buffer)
                    buffer.clear()
                else:
                    popleft = buffer.popleft
                    items = [popleft() for _ in range(_WRITE_CHUNK)]
                try:
                    frames = encode_frames(
                        items,
                        self.codec,
                        with_seq=self.recovery,
                        batch=self.batch,
                        max_batch_bytes=max_batch_bytes,
                    )
                except SerializationError:
                    frames = self._encode_each(items)
                rest = write_now(ws, frames)  # at once while the socket takes it
                if rest is not None:
                    try:
                        await send_frames(ws, rest)
                    except ConnectionClosed:
                        break
                stats.messages_sent += len(items)
                stats.frames_sent += len(frames)
                del items, frames
        finally:
            self._retire()

    def _retire(self) -> None:
        self._writing = False
        buffer = self._out
        if buffer is not None and (not buffer or self.closed):
            self._out = None
        if self._written is not None:
            self._written.set()
            self._written = None

    def _encode_each(self, items: list[OutMessage]) -> list[tuple[bool, bytes]]:
        frames = []
        for out in items:
            try:
                frames.append(out.frame(self.codec, self.recovery))
            except SerializationError as exc:
                self.stats.errors["unencodable"] += 1
                log.error("dropped a message to %s that cannot be encoded: %s", self.client_id, exc)
        return frames


def _checked(message: Any) -> OutMessage:
    if isinstance(message, bytes | bytearray | memoryview):
        return OutMessage(bytes(message))
    if type(message) is not dict:
        raise TypeError(
            f"a message must be a dict with a 'type' (or bytes), got {type(message).__name__}"
        )
    if not isinstance(message.get("type"), str):
        raise ValueError(f"a message needs a 'type' string, got {message!r:.200}")
    return OutMessage(message)


__all__ = ["ClientInfo", "ClientSession"]
