"""The resilient WebSocket client: typed handlers, reconnect, heartbeat, queue, recovery."""

from __future__ import annotations

import inspect
import itertools
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import CLOSED
from websockets.trio.client import connect as ws_connect

from haive.dataflow.backpressure import BoundedBuffer
from haive.dataflow.errors import SerializationError

from ._connections import HaiveClientConnection, send_frames, unwrap_single_error
from .config import ConnectionConfig
from .errors import (
    ConnectionFailedError,
    InvalidRoomError,
    MessageTooLargeError,
    RoomAccessError,
    TLSVerificationError,
)
from .handlers import MessageHandler
from .protocol import (
    CLIENT_ID_HEADER,
    CLOSE_REPLACED,
    FEATURES_HEADER,
    JSON,
    MSGPACK,
    OutMessage,
    encode_frames,
    parse_features,
    parse_frame,
    valid_room,
)
from .tls import describe_tls_failure, tls_failure

log = logging.getLogger("haive.websocket.client")

F = TypeVar("F", bound=Callable[..., Any])

_YIELD_EVERY = 32
#: HTTP statuses that retrying cannot fix.
_FATAL_STATUSES = frozenset({400, 401, 403, 404, 405, 426})
#: Message types of the protocol: not counted as unknown when no handler takes them.
_PROTOCOL_TYPES = frozenset(
    {
        "welcome",
        "joined",
        "left",
        "gap",
        "error",
        "pong",
        "members",
        "rooms",
        "user_joined",
        "user_left",
    }
)

EVENT_KINDS = (
    "connected",
    "reconnected",
    "disconnected",
    "reconnecting",
    "heartbeat_timeout",
    "gap",
    "replaced",
    "gave_up",
)


def reconnect_delay(attempt: int, config: ConnectionConfig, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (1, 2, ...): exponential, capped, jittered.

    The nominal delay is ``reconnect_interval * backoff_factor ** (attempt - 1)``, at most
    ``max_reconnect_interval``; jitter draws the real one from
    ``[nominal * (1 - jitter), nominal]`` so that clients dropped together do not all come
    back at the same instant.

    Example::

        >>> config = ConnectionConfig(url="ws://h/", reconnect_interval=1, max_reconnect_interval=8, jitter=0)
        >>> [reconnect_delay(n, config, random.Random(0)) for n in range(1, 6)]
        [1.0, 2.0, 4.0, 8.0, 8.0]
    """
    nominal = min(
        config.max_reconnect_interval,
        config.reconnect_interval * config.backoff_factor ** (attempt - 1),
    )
    return nominal * (1.0 - config.jitter * rng.random())


@attrs.frozen
class ConnectionEvent:
    """Something that happened to the connection; see :data:`EVENT_KINDS`.

    Example::

        >>> ConnectionEvent("reconnecting", attempt=2, delay=1.5).kind
        'reconnecting'
    """

    kind: str
    attempt: int = 0
    delay: float | None = None
    error: str | None = None
    at: float = 0.0
    detail: dict[str, Any] | None = None


@attrs.define
class ClientStats:
    """Counters of one client.

    Example::

        >>> ClientStats().reconnects
        0
    """

    connects: int = 0
    reconnects: int = 0
    messages_sent: int = 0
    frames_sent: int = 0
    messages_received: int = 0
    duplicates_dropped: int = 0
    unknown_types: int = 0
    invalid_messages: int = 0
    handler_errors: int = 0
    heartbeat_timeouts: int = 0
    server_errors: Counter[str] = attrs.field(factory=Counter)


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


class StreamingClient:
    """A WebSocket client that stays connected: the seed's ``StreamingClient`` on trio.

    * ``@client.on_message("type")`` registers ``handler(message)`` (sync or async);
      ``"*"`` catches other types, ``"binary"`` gets binary frames as ``message["data"]``.
    * ``async with client.connect():`` connects (waiting for the first connection) and
      keeps reconnecting with exponential backoff and jitter until the block ends;
      ``await nursery.start(client.run)`` does the same in your own nursery.
    * :meth:`send_message` / :meth:`send_binary` queue messages; while disconnected they
      wait in a bounded queue (``queue_size``, ``queue_policy``) and go out in order after
      the reconnect. Queued messages travel coalesced in batch frames when the server
      accepted the ``batch`` feature.
    * A heartbeat ping every ``heartbeat_interval`` detects a dead peer; the client then
      drops the connection and reconnects.
    * :meth:`join` / :meth:`leave` rooms; rooms are re-joined after a reconnect, resuming
      from the last sequence number seen, so missed room messages are replayed once.
    * ``open_stream`` (optional) opens the transport for each attempt instead of a TCP
      connection to the URL's host (a Unix socket, a proxy tunnel, an in-memory stream).
    * ``@client.on_event("reconnected")`` (or ``"*"``) observes :class:`ConnectionEvent`\\ s;
      :attr:`events` keeps the recent ones and :attr:`stats` counts.

    Example::

        >>> import trio
        >>> from haive_plugin_websocket import WebSocketManager
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     async with manager.serving():
        ...         client = StreamingClient(ConnectionConfig(url=manager.url))
        ...         async with client.connect():
        ...             await client.join("news")
        ...             await manager.broadcast_to_room("news", {"type": "headline", "text": "hi"})
        ...             done = trio.Event()
        ...             @client.on_message("headline")
        ...             def headline(message):
        ...                 print(message["text"], message["room"])
        ...                 done.set()
        ...             await done.wait()
        >>> trio.run(main)
        hi news
    """

    def __init__(
        self,
        config: ConnectionConfig | str,
        *,
        rng: random.Random | None = None,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        if isinstance(config, str):
            config = ConnectionConfig(url=config)
        self.config = config
        self.handlers = MessageHandler()
        self.stats = ClientStats()
        self.events: deque[ConnectionEvent] = deque(maxlen=256)
        self.client_id: str | None = config.client_id
        self.features: frozenset[str] = frozenset()
        self.failed: ConnectionFailedError | None = None
        self._rng = rng or random.Random()
        self._open_stream = open_stream
        self._tls = config.tls_context
        self._codec = MSGPACK if config.serializer == "msgpack" else JSON
        self._wire_codec = JSON
        self._msgpack_frames = False
        self._batch = False
        self._recovery = False
        self._outbound: BoundedBuffer[OutMessage] = BoundedBuffer(
            config.queue_size, config.queue_policy, name="websocket-client-out"
        )
        self._inflight: list[OutMessage] | None = None
        self._flushed = trio.Event()
        self._rooms: dict[str, _RoomState] = {}
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._event_handlers: list[tuple[str, Callable[[ConnectionEvent], Any]]] = []
        self._ws: HaiveClientConnection | None = None
        self._connected = trio.Event()
        self._run_scope: trio.CancelScope | None = None
        self._closing = False
        self._since_yield = 0
        self._internal: dict[str, Callable[[dict[str, Any]], None]] = {
            "welcome": self._on_welcome,
            "joined": self._on_joined,
            "left": self._on_left,
            "gap": self._on_gap,
            "error": self._on_error,
        }

    # -- registration --------------------------------------------------------------------
    def on_message(self, message_type: str) -> Callable[[F], F]:
        """Decorator: ``handler(message)`` for messages of ``message_type`` (``"*"``: others)."""
        return self.handlers.on(message_type)

    def on_event(self, kind: str = "*") -> Callable[[F], F]:
        """Decorator: ``fn(event)`` for connection events of ``kind`` (``"*"``: all)."""
        if kind != "*" and kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; kinds are {EVENT_KINDS}")

        def register(fn: F) -> F:
            self._event_handlers.append((kind, fn))
            return fn

        return register

    # -- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def queued(self) -> int:
        """Messages waiting to be written (queued while disconnected, or not yet flushed)."""
        return len(self._outbound) + len(self._inflight or ())

    @property
    def dropped(self) -> int:
        """Messages the queue policy dropped (``drop_oldest`` / ``drop_newest``)."""
        return self._outbound.stats.dropped

    @property
    def rooms(self) -> list[str]:
        """Rooms this client is in (or will re-join on reconnect)."""
        return sorted(self._rooms)

    @property
    def extensions(self) -> list[str]:
        """WebSocket extensions negotiated on the current connection (``permessage-deflate``)."""
        return [ext.name for ext in self._ws.protocol.extensions] if self._ws is not None else []

    @property
    def latency(self) -> float:
        """Round-trip time measured by the last heartbeat, in seconds (0 before one)."""
        return self._ws.latency if self._ws is not None else 0.0

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected); raise if the client gave up."""
        while self._ws is None:
            if self.failed is not None:
                raise self.failed
            await self._connected.wait()
        await trio.lowlevel.checkpoint()

    # -- connection ----------------------------------------------------------------------------
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[StreamingClient]:
        """``async with client.connect():`` connected inside the block, closed after it.

        Raises :class:`~haive_plugin_websocket.errors.ConnectionFailedError` if the first
        connection cannot be made within ``max_reconnect_attempts``.
        """
        with unwrap_single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self.close()

    async def __aenter__(self) -> StreamingClient:
        self._cm = self.connect()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._cm.__aexit__(*exc_info)

    async def run(
        self, *, task_status: trio.TaskStatus[StreamingClient] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, and reconnect whenever the connection drops, until :meth:`close`.

        With ``nursery.start`` it returns once first connected. After giving up it sets
        :attr:`failed`, emits ``gave_up`` and returns (or raises, if never connected).
        """
        if self._run_scope is not None:
            raise RuntimeError(
                "this StreamingClient is already running; create one client per connection"
            )
        cfg = self.config
        attempt = 0
        started = False
        with trio.CancelScope() as self._run_scope:
            while not self._closing:
                error: BaseException | None = None
                try:
                    stream = await self._open_stream() if self._open_stream is not None else None
                    async with self._open(stream) as ws:
                        attempt = 0
                        if not started:
                            started = True
                            task_status.started(self)
                        await self._serve(ws)
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in _FATAL_STATUSES:
                        self._give_up(
                            f"the server refused the connection: HTTP {status}", exc, attempt
                        )
                        if not started:
                            raise self.failed from exc  # type: ignore[misc]
                        return
                    error = exc
                except (
                    OSError,
                    ConnectionClosed,
                    InvalidHandshake,
                    TimeoutError,
                    trio.BrokenResourceError,
                ) as exc:
                    error = exc
                if self._closing:
                    return
                tls_error = tls_failure(error)
                if tls_error is not None:
                    # An untrusted certificate or a TLS mismatch: retrying cannot help.
                    self._give_up(
                        describe_tls_failure(tls_error, cfg.url),
                        error,
                        attempt,
                        error_cls=TLSVerificationError,
                    )
                    if not started:
                        raise self.failed from error  # type: ignore[misc]
                    return
                close_code = _close_code(error)
                if close_code == CLOSE_REPLACED:
                    self._emit("replaced", error=_describe(error))
                    self._give_up(
                        "replaced by a newer connection with the same client id", error, attempt
                    )
                    return
                self._emit("disconnected", attempt=attempt, error=_describe(error))
                attempt += 1
                if cfg.max_reconnect_attempts is not None and attempt > cfg.max_reconnect_attempts:
                    self._give_up(
                        f"could not connect to {cfg.url} after {cfg.max_reconnect_attempts} "
                        f"reconnect attempts: {_describe(error)}",
                        error,
                        attempt,
                    )
                    if not started:
                        raise self.failed from error  # type: ignore[misc]
                    return
                delay = reconnect_delay(attempt, cfg, self._rng)
                self._emit("reconnecting", attempt=attempt, delay=delay, error=_describe(error))
                await trio.sleep(delay)

    def _give_up(
        self,
        message: str,
        error: BaseException | None,
        attempt: int,
        *,
        error_cls: type[ConnectionFailedError] = ConnectionFailedError,
    ) -> None:
        self.failed = error_cls(message)
        self._emit("gave_up", attempt=attempt, error=_describe(error))
        # Wake everyone waiting for the connection, a room or a reply: they raise `failed`.
        self._connected.set()
        for state in self._rooms.values():
            state.joined.set()
        for pending in self._pending.values():
            pending.done.set()

    def _open(self, stream: trio.abc.Stream | None) -> ws_connect:
        cfg = self.config
        headers: list[tuple[str, str]] = []
        offered = cfg.offered_features
        if offered:
            headers.append((FEATURES_HEADER, ", ".join(offered)))
        if self.client_id is not None:
            headers.append((CLIENT_ID_HEADER, self.client_id))
        if cfg.token is not None:
            headers.append(("Authorization", f"Bearer {cfg.token}"))
        return ws_connect(
            cfg.url,
            compression=cfg.compression,
            additional_headers=headers,
            open_timeout=cfg.open_timeout,
            close_timeout=cfg.close_timeout,
            ping_interval=None,  # our own heartbeat, below, reports and reconnects
            max_size=cfg.max_message_size,
            proxy=None,
            stream=stream,
            ssl=self._tls,
            create_connection=HaiveClientConnection,
        )

    async def _serve(self, ws: HaiveClientConnection) -> None:
        cfg = self.config
        response = ws.response
        accepted = parse_features(response.headers.get(FEATURES_HEADER) if response else None)
        self.features = frozenset(f for f in accepted if f in cfg.offered_features)
        self._batch = "batch" in self.features
        self._recovery = "recovery" in self.features
        self._msgpack_frames = "msgpack" in self.features
        self._wire_codec = MSGPACK if self._msgpack_frames else JSON
        if response is not None and response.headers.get(CLIENT_ID_HEADER):
            self.client_id = response.headers[CLIENT_ID_HEADER]
        # Re-join rooms before anything queued goes out, resuming where we left off.
        rejoin = [
            self._join_message(room, state, resume=True) for room, state in self._rooms.items()
        ]
        if rejoin:
            await send_frames(
                ws,
                encode_frames(
                    rejoin,
                    self._wire_codec,
                    with_seq=False,
                    batch=self._batch,
                    max_batch_bytes=cfg.max_batch_bytes,
                ),
            )
        self._ws = ws
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
            self._emit("reconnected")
        else:
            self._emit("connected")
        self._connected.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, ws)
                if cfg.heartbeat_interval is not None:
                    nursery.start_soon(self._heartbeat, ws, nursery.cancel_scope)
                try:
                    await self._reader(ws)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._ws = None
            self._connected = trio.Event()
            for state in self._rooms.values():
                if state.joined.is_set():
                    state.joined = trio.Event()
        if ws.state is CLOSED:
            raise ws.close_exc  # tells run() how the connection ended (close code, cause)

    def _join_message(self, room: str, state: _RoomState, *, resume: bool) -> OutMessage:
        message: dict[str, Any] = {"type": "join", "room": room}
        if resume and state.last_seq is not None:
            message["since"] = state.last_seq
            if state.epoch is not None:
                message["epoch"] = state.epoch
        return OutMessage(message)

    async def close(self) -> None:
        """Flush what is queued (for up to ``close_timeout``), close, stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(self.config.close_timeout):
                await self.flush()
            with trio.move_on_after(self.config.close_timeout):
                await ws.aclose()
        if self._run_scope is not None:
            self._run_scope.cancel()
        await trio.lowlevel.checkpoint()

    async def flush(self) -> None:
        """Wait until every queued message was written to the connection."""
        while (len(self._outbound) or self._inflight) and self._ws is not None:
            self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    # -- tasks -----------------------------------------------------------------------------------
    async def _writer(self, ws: HaiveClientConnection) -> None:
        buffer = self._outbound
        stats = self.stats
        max_batch_bytes = self.config.max_batch_bytes
        while True:
            items = self._inflight
            if not items:
                items = self._inflight = await buffer.get_batch(8192)
            frames = encode_frames(
                items,
                self._wire_codec,
                with_seq=False,
                batch=self._batch,
                max_batch_bytes=max_batch_bytes,
            )
            try:
                await send_frames(ws, frames)
            except ConnectionClosed:
                return  # the batch stays in flight and goes first after the reconnect
            self._inflight = None
            stats.messages_sent += len(items)
            stats.frames_sent += len(frames)
            if not len(buffer):
                self._flushed.set()

    async def _reader(self, ws: HaiveClientConnection) -> None:
        try:
            while True:
                raw = await ws.recv()
                try:
                    messages = parse_frame(
                        raw, msgpack_frames=self._msgpack_frames, batch=self._batch
                    )
                except SerializationError as exc:
                    self.stats.invalid_messages += 1
                    log.warning("ignored a malformed frame from %s: %s", self.config.url, exc)
                    continue
                self.stats.messages_received += len(messages)
                dispatch = self._dispatch
                for message in messages:
                    pending = dispatch(message)
                    if pending is not None:  # an async handler
                        try:
                            await pending
                        except Exception:
                            self.stats.handler_errors += 1
                            log.exception("message handler for %r failed", message.get("type"))
        except ConnectionClosed:
            return

    async def _heartbeat(self, ws: HaiveClientConnection, cancel_scope: trio.CancelScope) -> None:
        interval = self.config.heartbeat_interval
        timeout = self.config.effective_heartbeat_timeout
        assert interval is not None and timeout is not None
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as deadline:
                try:
                    pong = await ws.ping()
                except ConnectionClosed:
                    return
                await pong.wait()
            if deadline.cancelled_caught:
                self.stats.heartbeat_timeouts += 1
                self._emit("heartbeat_timeout", error=f"no pong within {timeout:g} s")
                # The peer is gone or stuck: drop the TCP connection now, no close handshake.
                await trio.aclose_forcefully(ws.stream)
                cancel_scope.cancel()
                return

    def _dispatch(self, message: Any) -> Awaitable[Any] | None:
        """Handle one message; returns the awaitable of an async handler (None otherwise)."""
        if type(message) is not dict:
            self.stats.invalid_messages += 1
            return None
        mtype = message.get("type")
        if type(mtype) is not str:
            self.stats.invalid_messages += 1
            return None
        seq = message.get("seq")
        if type(seq) is int:
            state = self._rooms.get(message.get("room"))  # type: ignore[arg-type]
            if state is not None:
                if state.last_seq is not None and seq <= state.last_seq:
                    self.stats.duplicates_dropped += 1
                    return None
                state.last_seq = seq
        internal = self._internal.get(mtype)
        if internal is not None:
            internal(message)
        request_id = message.get("id")
        if type(request_id) is int:
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                pending.value = message
                pending.done.set()
        route = self.handlers.route(mtype)
        if route is None:
            if internal is None and mtype not in _PROTOCOL_TYPES:
                self.stats.unknown_types += 1
            return None
        fn, is_async = route
        try:
            result = fn(message)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("message handler for %r failed", mtype)
            return None
        return result if is_async else None

    # -- protocol messages -------------------------------------------------------------------------
    def _on_welcome(self, message: dict[str, Any]) -> None:
        client_id = message.get("client_id")
        if isinstance(client_id, str):
            self.client_id = client_id

    def _on_joined(self, message: dict[str, Any]) -> None:
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

    def _on_left(self, message: dict[str, Any]) -> None:
        room = message.get("room")
        if isinstance(room, str):
            self._rooms.pop(room, None)

    def _on_gap(self, message: dict[str, Any]) -> None:
        self._emit("gap", detail=dict(message))

    def _on_error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code"))
        self.stats.server_errors[code] += 1
        log.warning("server error %s: %s", code, message.get("message"))
        room = message.get("room")
        ref = message.get("ref_type")
        if isinstance(room, str) and ref == "join":
            state = self._rooms.pop(room, None)
            if state is not None:
                state.error = RoomAccessError(room, code, str(message.get("message")))
                state.joined.set()

    # -- sending ---------------------------------------------------------------------------------------
    def _prepare(self, message: Any) -> OutMessage:
        if self.failed is not None:
            raise self.failed
        if type(message) is not dict:
            raise TypeError(
                f"send_message expects a dict with a 'type', got {type(message).__name__}"
            )
        if not isinstance(message.get("type"), str):
            raise ValueError(f"a message needs a 'type' string, got {message!r:.200}")
        out = OutMessage(message)
        size = len(out.encode(self._codec, False))
        if size > self.config.max_message_size:
            raise MessageTooLargeError(
                f"message of {size} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        return out

    async def _enqueue(self, out: OutMessage) -> None:
        buffer = self._outbound
        self._since_yield += 1
        if self._since_yield < _YIELD_EVERY and buffer.room() > 0:
            buffer.put_nowait_batch([out])
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        self._since_yield = 0
        await buffer.put(out)

    async def send_message(self, message: dict[str, Any]) -> None:
        """Queue a message (a dict with a ``"type"``); sent now, or after the reconnect.

        Encoding errors and oversize messages raise here (nothing is queued). With the
        ``block`` queue policy this waits while the queue is full.
        """
        await self._enqueue(self._prepare(message))

    def send_message_nowait(self, message: dict[str, Any]) -> None:
        """Queue a message without waiting; ``trio.WouldBlock`` if a ``block`` queue is full."""
        self._outbound.put_nowait_batch([self._prepare(message)])

    async def send_binary(self, data: bytes) -> None:
        """Queue binary data: a binary frame (``{"type": "binary"}`` with MessagePack)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_binary expects bytes, got {type(data).__name__}")
        if len(data) > self.config.max_message_size:
            raise MessageTooLargeError(
                f"binary message of {len(data)} bytes exceeds max_message_size={self.config.max_message_size}"
            )
        if self.failed is not None:
            raise self.failed
        await self._enqueue(OutMessage(bytes(data)))

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
        if self._ws is not None:
            state.joined = trio.Event()
            await self._enqueue(self._join_message(room, state, resume=True))
        if wait:
            await state.joined.wait()
            if state.error is not None:
                raise state.error
            if self.failed is not None:
                raise self.failed

    async def leave(self, room: str) -> None:
        """Leave ``room`` (and stop re-joining it)."""
        if self._rooms.pop(room, None) is not None and self._ws is not None:
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
            assert self.failed is not None
            raise self.failed
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

    # -- events --------------------------------------------------------------------------------------------
    def _emit(self, kind: str, **fields: Any) -> None:
        event = ConnectionEvent(kind, at=trio.current_time(), **fields)
        self.events.append(event)
        for wanted, fn in self._event_handlers:
            if wanted in ("*", kind):
                try:
                    result = fn(event)
                    if inspect.isawaitable(result):
                        log.error(
                            "event handlers must be synchronous; %r returned an awaitable", fn
                        )
                        result.close()  # type: ignore[attr-defined]
                except Exception:
                    log.exception("connection event handler %r failed", fn)


def _close_code(error: BaseException | None) -> int | None:
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return error.rcvd.code
    return None


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
