"""The WebSocket server: connections, rooms, typed handlers, recovery, limits, auth.

Each connection's handler reads frames and routes messages to handlers. Messages for a
client go into that connection's bounded outbound queue (the core's ``BoundedBuffer``),
drained by a writer task that exists only while something is queued; it coalesces what is
queued into batch frames when the client negotiated ``batch``. Broadcasts only append to
queues and never wait for a client, so a slow client cannot stall a broadcast: its queue's
strategy (drop-oldest, drop-newest, disconnect) decides. An idle connection costs
websockets' own connection objects plus one small session object.
"""

from __future__ import annotations

import http
import inspect
import logging
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.trio.server import Server, serve

from haive.dataflow.backpressure import BackpressureStrategy, BoundedBuffer
from haive.dataflow.errors import SerializationError

from ._connections import HaiveServerConnection, send_frames, unwrap_single_error
from .config import ServerConfig
from .errors import InvalidRoomError, NotServingError, UnknownClientError
from .handlers import MessageHandler
from .protocol import (
    CLIENT_ID_HEADER,
    CLOSE_POLICY_VIOLATION,
    CLOSE_REPLACED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CONTROL_TYPES,
    FEATURES_HEADER,
    FEATURES_QUERY,
    JSON,
    MSGPACK,
    OutMessage,
    TokenBucket,
    encode_frames,
    parse_features,
    parse_frame,
    valid_client_id,
    valid_room,
)
from .rooms import RoomTable

if TYPE_CHECKING:
    from .backplane import Backplane

log = logging.getLogger("haive.websocket.server")

F = TypeVar("F", bound=Callable[..., Any])

#: A broadcast never blocks; it lets other tasks run every this many calls so that
#: connection writers get to coalesce what a fast producer queued.
_YIELD_EVERY = 32


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


@attrs.define
class ServerStats:
    """Counters of one server. ``errors`` counts bad input and refusals by error code.

    Example::

        >>> stats = ServerStats()
        >>> stats.errors["malformed"] += 1
        >>> stats.snapshot()["errors"]
        {'malformed': 1}
    """

    connections_opened: int = 0
    connections_open: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    frames_sent: int = 0
    broadcasts: int = 0
    deliveries: int = 0
    dropped_outbound: int = 0
    slow_consumer_disconnects: int = 0
    flood_disconnects: int = 0
    errors: Counter[str] = attrs.field(factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["errors"] = dict(self.errors)
        return data


class _DisconnectOnOverflow(BackpressureStrategy):
    """Outbound strategy ``disconnect``: a full queue drops the connection, not messages."""

    PLUGIN_NAME = "disconnect"

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self._on_overflow = on_overflow

    def overflow(self, buffer: BoundedBuffer[Any], items: Sequence[Any]) -> Sequence[Any]:
        self._on_overflow()
        return []


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
        >>> from haive_plugin_websocket import StreamingClient, ConnectionConfig
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

    def __init__(self, manager: WebSocketManager, ws: HaiveServerConnection, info: ClientInfo):
        config = manager.config
        self.manager = manager
        self.ws = ws
        self.info = info
        self.client_id = info.client_id
        self.rooms: set[str] = set()
        features = info.features
        self.msgpack = "msgpack" in features
        self.codec = MSGPACK if self.msgpack else JSON
        self.batch = "batch" in features
        self.recovery = "recovery" in features
        self.bucket = (
            TokenBucket(
                config.rate_limit, config.rate_burst or config.rate_limit, trio.current_time()
            )
            if config.rate_limit
            else None
        )
        self.rate_dropped = 0
        self._last_rate_error = -math.inf
        # The outbound queue and its writer task exist only while there is something to
        # send: an idle connection costs websockets' connection and this object, no more.
        self._out: BoundedBuffer[OutMessage] | None = None
        self._writing = False
        self._written: trio.Event | None = None
        self._dropped = 0
        self._kick: tuple[int, str] | None = None
        self.closed = False

    @property
    def outbound(self) -> BoundedBuffer[OutMessage] | None:
        """The bounded outbound queue while messages wait in it (None when idle)."""
        return self._out

    @property
    def queued(self) -> int:
        """Messages waiting to be written to this client."""
        return len(self._out) if self._out is not None else 0

    @property
    def dropped(self) -> int:
        """Messages the outbound queue's strategy dropped for this (slow) client."""
        return self._dropped + (self._out.stats.dropped if self._out is not None else 0)

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
            out = self._out = BoundedBuffer(
                self.manager.config.outbound_queue,
                self.manager._outbound_strategy(self),
                name="websocket-out",
            )
        out.put_nowait_batch([message])
        if not self._writing:
            self._writing = True
            self.ws.nursery.start_soon(self._writer)
        return True

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
            self.manager.stats.errors[code] += 1
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

    def _on_overflow(self) -> None:
        if self._kick is None:
            self.manager.stats.slow_consumer_disconnects += 1
            self.manager.stats.errors["slow_consumer"] += 1
            self.kick(CLOSE_SLOW_CONSUMER, "slow consumer: outbound queue full")

    async def _close(self, code: int, reason: str) -> None:
        ws = self.ws
        if code != CLOSE_SLOW_CONSUMER:
            # Let the writer flush what is queued (an error frame saying why) first.
            with trio.move_on_after(0.25):
                await self.flush()
            with trio.move_on_after(self.manager.config.close_timeout):
                await ws.aclose(code, reason)
        # A slow consumer does not read: its socket buffer is full, a close frame would
        # never get through. Drop the TCP connection; the client resumes with recovery.
        # The reader then sees the connection closed and the session ends.
        await trio.aclose_forcefully(ws.stream)

    # -- tasks -------------------------------------------------------------------------
    async def _writer(self) -> None:
        ws = self.ws
        stats = self.manager.stats
        max_batch_bytes = self.manager.config.max_batch_bytes
        try:
            while True:
                buffer = self._out
                if buffer is None or not len(buffer):
                    break  # drained: the writer retires until the next message
                items = buffer.get_nowait_batch(4096)
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
                try:
                    await send_frames(ws, frames)
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
        if buffer is not None and (not len(buffer) or self.closed):
            self._dropped += buffer.stats.dropped
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
                self.manager.stats.errors["unencodable"] += 1
                log.error("dropped a message to %s that cannot be encoded: %s", self.client_id, exc)
        return frames

    async def _reader(self) -> None:
        ws = self.ws
        on_frame = self.manager._on_frame
        while True:
            raw = await ws.recv()
            await on_frame(self, raw)


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


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


@attrs.frozen
class _Handshake:
    client_id: str
    identity: Any
    features: frozenset[str]
    path: str


AuthenticateFn = Callable[[str | None], Any]
AuthorizeFn = Callable[[ClientInfo, str, str], Any]


class WebSocketManager:
    """A WebSocket server with rooms, typed handlers, recovery, limits and scale-out.

    Start it in a nursery (``await nursery.start(manager.serve)`` returns once it listens)
    or with ``async with manager.serving():``. Clients connect to :attr:`url`.

    * Rooms: clients send ``{"type": "join", "room": ...}`` / ``leave``; the server side
      has :meth:`join_room`, :meth:`leave_room`, :meth:`members`, :attr:`rooms`,
      :attr:`client_rooms`. Members get ``user_joined`` / ``user_left`` notices; a dropped
      connection leaves all its rooms.
    * :meth:`broadcast_to_room`, :meth:`stream_to_room` and :meth:`send_to_client`
      queue messages and never wait for a client.
    * ``@manager.on_message("type")`` routes typed messages to ``handler(client, message)``;
      a returned dict is sent back to that client.
    * ``authenticate(token) -> identity | None`` (sync or async) checks the bearer token
      (``Authorization`` header or ``?token=``); ``None`` refuses the connection (HTTP 401).
      Room joins and publishes are authorized by ``authorize_room(info, room, action)``
      and by the ``haive_websocket_authorize_room`` plugin hook.
    * ``backplane``: a :class:`~haive_plugin_websocket.backplane.RedisBackplane` shares
      rooms between server processes.
    * TLS: ``WebSocketManager(certfile="cert.pem", keyfile="key.pem")`` (or ``ssl=`` a
      context) serves ``wss://``; see :class:`~haive_plugin_websocket.config.ServerConfig`.

    Registered as the ``websocket`` transport.

    Example::

        >>> import trio
        >>> async def main():
        ...     manager = WebSocketManager(port=0)
        ...     @manager.on_message("add")
        ...     def add(client, message):
        ...         return {"type": "sum", "value": message["a"] + message["b"]}
        ...     async with manager.serving():
        ...         from haive_plugin_websocket import StreamingClient, ConnectionConfig
        ...         client = StreamingClient(ConnectionConfig(url=manager.url))
        ...         got = trio.Event()
        ...         @client.on_message("sum")
        ...         def on_sum(message):
        ...             print("sum:", message["value"])
        ...             got.set()
        ...         async with client.connect():
        ...             await client.send_message({"type": "add", "a": 2, "b": 3})
        ...             await got.wait()
        >>> trio.run(main)
        sum: 5
    """

    PLUGIN_NAME: ClassVar[str] = "websocket"

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        authenticate: AuthenticateFn | None = None,
        authorize_room: AuthorizeFn | None = None,
        backplane: Backplane | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = attrs.evolve(config, **options)
        self.config = config
        self.authenticate = authenticate
        self.authorize_room = authorize_room
        self.backplane = backplane
        self.handlers = MessageHandler()
        self.stats = ServerStats()
        self._strategy_cls: type[BackpressureStrategy] = _DisconnectOnOverflow
        if config.slow_consumer != "disconnect":
            from haive.dataflow.plugins import get_registry

            self._strategy_cls = get_registry().backpressure(config.slow_consumer)
        self.clients: dict[str, ClientSession] = {}
        self._rooms = RoomTable(history_size=config.history_size, max_idle=config.max_idle_rooms)
        self.epoch = uuid.uuid4().hex[:12]
        self._on_connect: list[Callable[[ClientSession], Any]] = []
        self._on_disconnect: list[Callable[[ClientSession], Any]] = []
        self._server: Server | None = None
        self._ws_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._since_yield = 0
        self.port: int | None = None
        self._control: dict[str, Callable[[ClientSession, dict[str, Any]], Awaitable[None]]] = {
            "join": self._c_join,
            "leave": self._c_leave,
            "members": self._c_members,
            "rooms": self._c_rooms,
            "publish": self._c_publish,
            "direct": self._c_direct,
            "ping": self._c_ping,
        }

    def _outbound_strategy(self, session: ClientSession) -> BackpressureStrategy:
        if self.config.slow_consumer == "disconnect":
            return _DisconnectOnOverflow(session._on_overflow)
        return self._strategy_cls()

    # -- registration --------------------------------------------------------------------
    def on_message(self, message_type: str) -> Callable[[F], F]:
        """Decorator: ``handler(client, message)`` for messages of ``message_type``.

        ``"*"`` catches every type without its own handler. Control types (``join``,
        ``leave``, ``members``, ``rooms``, ``publish``, ``direct``, ``ping``, ``batch``)
        are the server's own and cannot be taken.
        """
        if message_type in CONTROL_TYPES:
            raise ValueError(
                f"message type {message_type!r} is a control message of the protocol; "
                f"reserved types: {sorted(CONTROL_TYPES)}"
            )
        return self.handlers.on(message_type)

    def on_connect(self, fn: F) -> F:
        """Decorator: ``fn(client)`` (sync or async) runs when a client connects.

        The handshake's HTTP headers are readable here (``client.ws.request.headers``);
        afterwards they are dropped to save memory unless ``keep_handshake_headers``.
        """
        self._on_connect.append(fn)
        return fn

    def on_disconnect(self, fn: F) -> F:
        """Decorator: ``fn(client)`` runs after a client's connection closed and it left its rooms."""
        self._on_disconnect.append(fn)
        return fn

    # -- serving -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``ws://host:port/`` of the running server (``wss://`` when it serves TLS)."""
        if self.port is None:
            raise NotServingError(
                "the server is not listening yet: start it with nursery.start(manager.serve)"
            )
        scheme = "wss" if self.config.tls_context is not None else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/"

    async def serve(
        self, *, task_status: trio.TaskStatus[WebSocketManager] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; then close every connection cleanly (1001).

        Use with ``await nursery.start(manager.serve)``, which returns once listening.
        """
        if self._server is not None:
            raise RuntimeError("this WebSocketManager is already serving")
        cfg = self.config
        self._stopped = trio.Event()
        async with trio.open_nursery() as nursery:
            if self.backplane is not None:
                await nursery.start(self.backplane.run, self)
                self.epoch = self.backplane.epoch
            self._server = await nursery.start(self._run_ws)
            self.port = self._server.listeners[0].socket.getsockname()[1]
            log.info("websocket server listening on %s", self.url)
            task_status.started(self)
            try:
                await self._stopped.wait()
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(cfg.close_timeout + 1.0):
                        await self._server.aclose()
                    if self._ws_scope is not None:
                        self._ws_scope.cancel()
                    nursery.cancel_scope.cancel()
                self._server = None
                self.port = None

    async def _run_ws(self, *, task_status: trio.TaskStatus[Server]) -> None:
        cfg = self.config
        # Shielded: on cancellation serve() closes connections gracefully first.
        with trio.CancelScope(shield=True) as self._ws_scope:
            await serve(
                self._handle,
                cfg.port,
                host=cfg.host,
                compression=cfg.compression,
                process_request=self._process_request,
                process_response=self._process_response,
                max_size=cfg.max_message_size,
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_timeout,
                open_timeout=cfg.open_timeout,
                close_timeout=cfg.close_timeout,
                create_connection=HaiveServerConnection,
                ssl=cfg.tls_context,
                task_status=task_status,
            )

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[WebSocketManager]:
        """``async with manager.serving():`` serves inside the block, stops after it."""
        with unwrap_single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(self.serve)
                try:
                    yield self
                finally:
                    self.stop()

    def stop(self) -> None:
        """Ask :meth:`serve` to close every connection (1001 going away) and return."""
        self._stopped.set()

    async def abort(self) -> None:
        """Stop abruptly, like a crash: connections are dropped without a close frame."""
        for session in list(self.clients.values()):
            await trio.aclose_forcefully(session.ws.stream)
        if self._ws_scope is not None:
            self._ws_scope.cancel()
        self._stopped.set()

    # -- handshake -----------------------------------------------------------------------
    async def _process_request(
        self, ws: HaiveServerConnection, request: Request
    ) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        offered = parse_features(
            request.headers.get(FEATURES_HEADER) or _first(query.get(FEATURES_QUERY))
        )
        features = frozenset(f for f in offered if f in self.config.features)
        identity = None
        if self.authenticate is not None:
            token = _bearer(request.headers.get("Authorization")) or _first(query.get("token"))
            try:
                identity = self.authenticate(token)
                if inspect.isawaitable(identity):
                    identity = await identity
            except Exception:
                log.exception("authenticate() failed; refusing the connection")
                identity = None
            if identity is None:
                self.stats.errors["unauthorized"] += 1
                return ws.respond(http.HTTPStatus.UNAUTHORIZED, "missing or invalid token\n")
        requested = request.headers.get(CLIENT_ID_HEADER) or _first(query.get("client_id"))
        if requested is not None and not valid_client_id(requested):
            self.stats.errors["invalid_message"] += 1
            return ws.respond(
                http.HTTPStatus.BAD_REQUEST,
                "invalid client id: use 1-64 letters, digits or _.:@+- starting with a letter or digit\n",
            )
        client_id = requested or uuid.uuid4().hex[:16]
        ws.haive = _Handshake(client_id, identity, features, urlsplit(request.path).path)
        return None

    def _process_response(
        self, ws: HaiveServerConnection, request: Request, response: Response
    ) -> Response | None:
        handshake = ws.haive
        if handshake is not None and response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            response.headers[FEATURES_HEADER] = ", ".join(sorted(handshake.features))
            response.headers[CLIENT_ID_HEADER] = handshake.client_id
        return None

    # -- connection lifecycle ---------------------------------------------------------------
    async def _handle(self, ws: HaiveServerConnection) -> None:
        handshake: _Handshake = ws.haive
        ws.haive = None
        try:
            remote = ws.remote_address
        except OSError:
            remote = None
        info = ClientInfo(
            handshake.client_id, handshake.identity, handshake.features, handshake.path, remote
        )
        session = ClientSession(self, ws, info)
        previous = self.clients.get(info.client_id)
        if previous is not None:
            previous.kick(CLOSE_REPLACED, "replaced by a newer connection with the same client id")
        self.clients[info.client_id] = session
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        try:
            if self.backplane is not None:
                await self.backplane.register_client(info.client_id)
            if self.config.send_welcome:
                session.send(
                    {
                        "type": "welcome",
                        "client_id": info.client_id,
                        "features": sorted(info.features),
                    }
                )
            await _call_all(self._on_connect, session)
            if not self.config.keep_handshake_headers:
                _forget_handshake_headers(ws)
            try:
                await session._reader()
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
                    self.stats.errors["too_big"] += 1
        except trio.Cancelled:
            # The server is being torn down abruptly: do not leave the socket to the GC.
            await trio.aclose_forcefully(ws.stream)
            raise
        finally:
            session.closed = True
            self.stats.dropped_outbound += session.dropped
            session._out = None
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.close_timeout):
                await self._cleanup(session)

    async def _cleanup(self, session: ClientSession) -> None:
        self.stats.connections_open -= 1
        cid = session.client_id
        if self.clients.get(cid) is session:
            del self.clients[cid]
            if self.backplane is not None:
                await _quietly(self.backplane.unregister_client(cid))
        for room in sorted(session.rooms):
            await self._leave(session, room, reply=False)
        try:
            await _call_all(self._on_disconnect, session)
        except Exception:
            log.exception("an on_disconnect callback failed for %s", cid)

    # -- incoming ------------------------------------------------------------------------
    async def _on_frame(self, session: ClientSession, raw: str | bytes) -> None:
        try:
            messages = parse_frame(raw, msgpack_frames=session.msgpack, batch=session.batch)
        except SerializationError as exc:
            session.error("malformed", str(exc))
            return
        count = len(messages)
        self.stats.messages_received += count
        bucket = session.bucket
        if bucket is not None:
            granted = bucket.take(count, trio.current_time())
            if granted < count:
                self._rate_limited(session, count - granted)
                messages = messages[:granted]
        # Fast path for the common case, a synchronous handler: no coroutine per message.
        control = self._control
        route_of = self.handlers.route
        for message in messages:
            if type(message) is dict:
                mtype = message.get("type")
                if type(mtype) is str and mtype not in control:
                    route = route_of(mtype)
                    if route is not None and not route[1]:
                        try:
                            result = route[0](session, message)
                        except Exception as exc:
                            self._handler_failed(session, mtype, exc, message)
                            continue
                        if result is not None:
                            self._reply(session, result, message)
                        continue
            await self._dispatch(session, message)

    def _rate_limited(self, session: ClientSession, dropped: int) -> None:
        session.rate_dropped += dropped
        self.stats.errors["rate_limited"] += dropped
        now = trio.current_time()
        if now - session._last_rate_error >= 1.0:
            session._last_rate_error = now
            session.error(
                "rate_limited",
                f"more than {self.config.rate_limit:g} messages/s: {session.rate_dropped} dropped so far",
                count=False,
            )
        if session.rate_dropped >= self.config.flood_close_after and session._kick is None:
            self.stats.flood_disconnects += 1
            session.kick(CLOSE_POLICY_VIOLATION, "rate limit exceeded")

    async def _dispatch(self, session: ClientSession, message: Any) -> None:
        if type(message) is not dict:
            session.error(
                "invalid_message",
                f"expected an object with a 'type' string, got {type(message).__name__}",
            )
            return
        mtype = message.get("type")
        if type(mtype) is not str:
            session.error("invalid_message", "the message has no 'type' string", message)
            return
        control = self._control.get(mtype)
        if control is not None:
            await control(session, message)
            return
        route = self.handlers.route(mtype)
        if route is None:
            session.error("unknown_type", f"no handler for message type {mtype!r}", message)
            return
        fn, is_async = route
        try:
            result = fn(session, message)
            if is_async:
                result = await result
        except Exception as exc:
            self._handler_failed(session, mtype, exc, message)
            return
        if result is not None:
            self._reply(session, result, message)

    def _handler_failed(
        self, session: ClientSession, mtype: str, exc: Exception, message: dict[str, Any]
    ) -> None:
        log.error("handler for %r failed (client %s)", mtype, session.client_id, exc_info=exc)
        session.error("handler_error", f"{type(exc).__name__}: {exc}", message)

    def _reply(self, session: ClientSession, result: Any, message: dict[str, Any]) -> None:
        """Send what a handler returned (a dict or bytes) back to its client."""
        if type(result) is dict or isinstance(result, bytes):
            try:
                session.send(result)
            except (TypeError, ValueError) as exc:
                session.error("handler_error", f"handler returned an invalid reply: {exc}", message)

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
        await self._join(
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
        await self._leave(session, room, reply=True, request_id=message.get("id"))

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
        if room not in session.rooms:
            session.error("forbidden", f"join room {room!r} before publishing to it", message)
            return
        if not await self._authorized(session, room, "publish"):
            session.error("forbidden", f"not allowed to publish to room {room!r}", message)
            return
        exclude = None if message.get("echo") else session.client_id
        await self.broadcast_to_room(room, {**inner, "from": session.client_id}, exclude=exclude)

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
        if not await self.send_to_client(target, {**inner, "from": session.client_id}):
            session.error("unknown_client", f"no connected client {target!r:.80}", message)

    # -- authorization ---------------------------------------------------------------------
    async def _authorized(self, session: ClientSession, room: str, action: str) -> bool:
        from haive.dataflow.plugins import get_registry

        hook = getattr(get_registry().plugin_manager.hook, "haive_websocket_authorize_room", None)
        if hook is not None and hook.get_hookimpls():
            try:
                verdicts = hook(client=session.info, room=room, action=action)
            except Exception:
                log.exception(
                    "haive_websocket_authorize_room failed; denying %s on %r", action, room
                )
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

    # -- rooms -------------------------------------------------------------------------------
    async def _join(
        self,
        session: ClientSession,
        room_name: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        request_id: Any = None,
    ) -> None:
        already = room_name in session.rooms
        room = self._rooms.get_or_create(room_name)
        # From here to the replay nothing awaits: a broadcast cannot slip in between, so the
        # client gets what it missed, then everything new, without gaps or duplicates.
        room.members[session.client_id] = session
        self._rooms.active(room_name)
        session.rooms.add(room_name)
        history = room.history
        joined: dict[str, Any] = {
            "type": "joined",
            "room": room_name,
            "latest": history.latest,
            "epoch": self.epoch,
        }
        if request_id is not None:
            joined["id"] = request_id
        session.send(joined)
        if since is not None and session.recovery:
            if epoch is not None and epoch != self.epoch:
                session.send(
                    {
                        "type": "gap",
                        "room": room_name,
                        "since": since,
                        "reason": "epoch",
                        "oldest": history.oldest,
                        "latest": history.latest,
                    }
                )
            else:
                replay = history.since(since)
                if replay.gap:
                    session.send(
                        {
                            "type": "gap",
                            "room": room_name,
                            "since": since,
                            "reason": "too_old",
                            "oldest": replay.oldest,
                            "latest": replay.latest,
                        }
                    )
                for out in replay.messages:
                    session.enqueue(out)
        if already:
            return
        if self.backplane is not None:
            await _quietly(self.backplane.add_member(room_name, session.client_id))
        await self.broadcast_to_room(
            room_name, {"type": "user_joined", "user_id": session.client_id, "room": room_name}
        )

    async def _leave(
        self, session: ClientSession, room_name: str, *, reply: bool, request_id: Any = None
    ) -> None:
        room = self._rooms.get(room_name)
        was_member = room_name in session.rooms
        session.rooms.discard(room_name)
        if room is not None and room.members.get(session.client_id) is session:
            del room.members[session.client_id]
            self._rooms.touch_idle(room_name)
        if reply:
            left: dict[str, Any] = {"type": "left", "room": room_name}
            if request_id is not None:
                left["id"] = request_id
            session.send(left)
        if not was_member:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        # After a takeover the new connection of this client id is still a member.
        if room is not None and session.client_id in room.members:
            return
        if self.backplane is not None:
            await _quietly(self.backplane.remove_member(room_name, session.client_id))
        await self.broadcast_to_room(
            room_name, {"type": "user_left", "user_id": session.client_id, "room": room_name}
        )

    def _session(self, client_id: str) -> ClientSession:
        session = self.clients.get(client_id)
        if session is None:
            raise UnknownClientError(
                f"no client {client_id!r} is connected to this server; connected: "
                f"{', '.join(sorted(self.clients)[:20]) or '(none)'}"
            )
        return session

    async def join_room(self, client_id: str, room_name: str) -> None:
        """Put a connected client into a room (it gets ``joined``; members ``user_joined``)."""
        _check_room(room_name)
        await self._join(self._session(client_id), room_name)

    async def leave_room(self, client_id: str, room_name: str) -> None:
        """Take a connected client out of a room (it gets ``left``; members ``user_left``)."""
        _check_room(room_name)
        await self._leave(self._session(client_id), room_name, reply=True)

    @property
    def rooms(self) -> dict[str, set[str]]:
        """Room name -> ids of this server's members (a snapshot; empty rooms omitted)."""
        return {name: set(room.members) for name, room in self._rooms.rooms.items() if room.members}

    @property
    def client_rooms(self) -> dict[str, set[str]]:
        """Client id -> rooms it is in (a snapshot) for this server's clients."""
        return {cid: set(session.rooms) for cid, session in self.clients.items()}

    async def members(self, room_name: str) -> list[str]:
        """Ids of the room's members: on every node when a backplane is configured."""
        _check_room(room_name)
        if self.backplane is not None:
            return await self.backplane.members(room_name)
        room = self._rooms.get(room_name)
        await trio.lowlevel.checkpoint_if_cancelled()
        return sorted(room.members) if room is not None else []

    def history(self, room_name: str) -> list[dict[str, Any]]:
        """The room's kept messages with their ``seq`` (oldest first), for inspection."""
        room = self._rooms.get(room_name)
        if room is None:
            return []
        return [
            {**m.payload, "seq": m.seq}
            for m in room.history.messages
            if isinstance(m.payload, dict)
        ]

    # -- sending -------------------------------------------------------------------------------
    async def broadcast_to_room(
        self, room_name: str, message: dict[str, Any] | bytes, *, exclude: str | None = None
    ) -> None:
        """Send ``message`` to every member of ``room_name`` (on every node with a backplane).

        Dict messages get ``"room"`` set and a per-room sequence number (kept in the room's
        history for recovery); bytes go out as binary frames, without history. Never waits
        for a client: slow members' queues apply their strategy. ``exclude`` skips one id.
        """
        _check_room(room_name)
        if isinstance(message, bytes | bytearray | memoryview):
            out = OutMessage(bytes(message))
        else:
            if type(message) is not dict or not isinstance(message.get("type"), str):
                _checked(message)  # raises the precise error
            out = OutMessage({**message, "room": room_name})
            _validate(out)
        self.stats.broadcasts += 1
        if self.backplane is not None:
            await self.backplane.publish_room(room_name, out.payload, exclude)
        else:
            if not out.is_binary:
                out.seq = self._rooms.get_or_create(room_name).next_seq()
            self._deliver_room(room_name, out, exclude)
        await self._maybe_yield()

    async def _maybe_yield(self) -> None:
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def _deliver_room(self, room_name: str, out: OutMessage, exclude: str | None) -> int:
        """Record and fan out one room message on this node (called by the backplane too)."""
        if out.seq is not None:
            room = self._rooms.get_or_create(room_name)
            room.record(out)
        else:
            found = self._rooms.get(room_name)
            if found is None:
                return 0
            room = found
        delivered = 0
        for cid, session in room.members.items():
            if cid != exclude and session.enqueue(out):
                delivered += 1
        self.stats.deliveries += delivered
        return delivered

    async def stream_to_room(
        self, room_name: str, data_stream: AsyncIterable[Any], *, message_type: str = "stream_chunk"
    ) -> int:
        """Broadcast each item of ``data_stream`` as ``{"type": message_type, "data": item,
        "timestamp": ...}``; returns how many were sent when the stream ends."""
        count = 0
        async for chunk in data_stream:
            await self.broadcast_to_room(
                room_name,
                {"type": message_type, "data": chunk, "timestamp": datetime.now(UTC).isoformat()},
            )
            count += 1
        return count

    async def send_to_client(self, client_id: str, message: dict[str, Any] | bytes) -> bool:
        """Send to one client (on any node with a backplane); False if it is not connected."""
        session = self.clients.get(client_id)
        if session is not None:
            sent = session.send(message)
            await self._maybe_yield()
            return sent
        if self.backplane is not None:
            out = _checked(message)
            _validate(out)
            return await self.backplane.publish_direct(client_id, out.payload)
        await trio.lowlevel.checkpoint_if_cancelled()
        return False

    def _deliver_direct(self, client_id: str, payload: dict[str, Any] | bytes) -> bool:
        session = self.clients.get(client_id)
        return session.enqueue(OutMessage(payload)) if session is not None else False

    async def disconnect(self, client_id: str, code: int = 1000, reason: str = "") -> None:
        """Close a connected client's connection."""
        await self._session(client_id).close(code, reason)


class MultiRoomWebSocket(WebSocketManager):
    """The seed's name for a room-oriented WebSocket server: a :class:`WebSocketManager`.

    Example::

        >>> room_ws = MultiRoomWebSocket(port=0)
        >>> room_ws.rooms, room_ws.client_rooms
        ({}, {})
    """


def _forget_handshake_headers(ws: HaiveServerConnection) -> None:
    # websockets keeps the opening handshake's request and response (about 4 KB with their
    # headers) for the connection's lifetime; only the request's presence matters after it.
    if ws.request is not None:
        ws.request.headers = Headers()
    if ws.response is not None:
        ws.response.headers = Headers()


def _validate(out: OutMessage) -> None:
    """Encode now (cached for the writers) so that a bad value fails in the caller."""
    if out.is_binary:
        return
    try:
        out.encode(JSON, False)
    except SerializationError:
        out.encode(MSGPACK, False)  # bytes values are fine for MessagePack clients


def _check_room(room_name: str) -> None:
    if not valid_room(room_name):
        raise InvalidRoomError(
            f"invalid room name {room_name!r}: use 1-128 letters, digits or _.:@/+- "
            "starting with a letter or digit"
        )


def _with_id(reply: dict[str, Any], request: dict[str, Any]) -> None:
    if "id" in request:
        reply["id"] = request["id"]


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _call_all(
    callbacks: list[Callable[[ClientSession], Any]], session: ClientSession
) -> None:
    for fn in callbacks:
        result = fn(session)
        if inspect.isawaitable(result):
            await result


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("backplane call failed")


__all__ = [
    "ClientInfo",
    "ClientSession",
    "MultiRoomWebSocket",
    "ServerStats",
    "WebSocketManager",
]
