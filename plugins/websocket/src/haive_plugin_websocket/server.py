"""The WebSocket server: connections, rooms, typed handlers, recovery, limits, auth.

Each connection's handler reads frames and routes messages to handlers. Messages for a
client go into that connection's bounded outbound queue (the core's ``BoundedBuffer``),
drained by a writer task that exists only while something is queued; it coalesces what is
queued into batch frames when the client negotiated ``batch``. Broadcasts only append to
queues and never wait for a client, so a slow client cannot stall a broadcast: its queue's
strategy (drop-oldest, drop-newest, disconnect) decides. An idle connection costs
websockets' own connection objects plus one small session object.

This module is the facade: :class:`WebSocketManager` (its configuration, registration and
serving) composes one part per concern, each an object in its own module, given the
parts it works with:

* :mod:`.server_session`: :class:`ClientInfo`, :class:`ClientSession` (one connection's
  outbound queue, writer and closing);
* :mod:`.server_lifecycle`: the handshake (authentication, client id, features) and a
  connection's start and end (:class:`.ConnectionLifecycle`);
* :mod:`.server_identity`: client ids bound to identities (:class:`.ClientIdBinding`);
* :mod:`.server_incoming`: parsing and routing incoming messages to handlers
  (:class:`.IncomingRouter`);
* :mod:`.server_control`: the protocol's control messages (:class:`.ControlMessages`);
* :mod:`.server_authorization`: who may join and publish (:class:`.RoomAuthorization`);
* :mod:`.server_membership`: joining and leaving rooms, with recovery replay
  (:class:`.RoomMembership`);
* :mod:`.server_broadcast`: broadcasts, streams and direct messages (:class:`.Broadcaster`);
* :mod:`.server_limits`: slow consumers and flood control (:class:`.ConnectionLimits`);
* :mod:`.server_registry`: the connected clients by id (:class:`.ConnectionRegistry`).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import trio
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.trio.server import Server, serve

from ._connections import HaiveServerConnection, unwrap_single_error
from .config import ServerConfig
from .errors import NotServingError
from .handlers import MessageHandler
from .protocol import CONTROL_TYPES, OutMessage
from .rooms import RoomTable
from .server_authorization import AuthorizeFn, RoomAuthorization
from .server_broadcast import Broadcaster
from .server_control import ControlMessages
from .server_identity import ClientIdBinding, IdentityKeyFn
from .server_identity import identity_key as default_identity_key
from .server_incoming import IncomingRouter
from .server_lifecycle import AuthenticateFn, ConnectionLifecycle
from .server_limits import ConnectionLimits
from .server_membership import RoomMembership
from .server_registry import ConnectionRegistry
from .server_session import ClientInfo, ClientSession

if TYPE_CHECKING:
    from .backplane import Backplane

log = logging.getLogger("haive.websocket.server")

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define
class ServerStats:
    """Counters of one server. ``errors`` counts bad input and refusals by error code.

    Every counter is live: ``dropped_outbound`` (messages slow clients' queues dropped)
    grows as they are dropped, while those clients are still connected;
    :meth:`WebSocketManager.connection_stats` has the same per connection.

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
    * With ``authenticate``, a client id is bound to the identity that connected with it
      (see :mod:`.server_identity`): another identity asking for it is closed with 4003
      and the owner is untouched. Identities are compared by ``identity_key(identity) ->
      str`` (default: a str is its own key, anything else its canonical JSON).
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
        identity_key: IdentityKeyFn = default_identity_key,
        **options: Any,
    ) -> None:
        if config is None:
            config = ServerConfig(**options)
        elif options:
            config = attrs.evolve(config, **options)
        self.config = config
        self.backplane = backplane
        self.handlers = MessageHandler()
        self.stats = ServerStats()
        self.port: int | None = None
        # The parts, each given what it works with (see the module docstring).
        self._limits = ConnectionLimits(config, self.stats)
        self._registry = ConnectionRegistry()
        self._binding = ClientIdBinding(
            self._registry,
            backplane,
            self.stats,
            ttl=config.client_id_ttl,
            identity_key=identity_key,
        )
        self._rooms = RoomTable(history_size=config.history_size, max_idle=config.max_idle_rooms)
        self._broadcaster = Broadcaster(self._rooms, self._registry, backplane, self.stats)
        self._membership = RoomMembership(
            self._rooms, self._registry, backplane, self._broadcaster, uuid.uuid4().hex[:12]
        )
        self._authorization = RoomAuthorization(authorize_room)
        control = ControlMessages(config, self._membership, self._broadcaster, self._authorization)
        self._incoming = IncomingRouter(self.stats, self.handlers, control.handlers, self._limits)
        self._lifecycle = ConnectionLifecycle(
            config,
            self.stats,
            registry=self._registry,
            membership=self._membership,
            binding=self._binding,
            limits=self._limits,
            incoming=self._incoming,
            backplane=backplane,
            authenticate=authenticate,
        )
        self._server: Server | None = None
        self._ws_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    @property
    def authenticate(self) -> AuthenticateFn | None:
        """``authenticate(token) -> identity | None`` (sync or async) checks each connection's
        bearer token; None (the default) accepts every connection without an identity."""
        return self._lifecycle.authenticate

    @authenticate.setter
    def authenticate(self, fn: AuthenticateFn | None) -> None:
        self._lifecycle.authenticate = fn

    @property
    def authorize_room(self) -> AuthorizeFn | None:
        """``authorize_room(info, room, action)`` (sync or async): False denies a join or
        publish; see :class:`~haive_plugin_websocket.server_authorization.RoomAuthorization`."""
        return self._authorization.authorize_room

    @authorize_room.setter
    def authorize_room(self, fn: AuthorizeFn | None) -> None:
        self._authorization.authorize_room = fn

    @property
    def identity_key(self) -> IdentityKeyFn:
        """``identity_key(identity) -> str``: which identities are the same owner of a
        client id (see :class:`~haive_plugin_websocket.server_identity.ClientIdBinding`)."""
        return self._binding.identity_key

    @identity_key.setter
    def identity_key(self, fn: IdentityKeyFn) -> None:
        self._binding.identity_key = fn

    @property
    def clients(self) -> dict[str, ClientSession]:
        """Client id -> its open :class:`ClientSession` on this server (the live mapping)."""
        return self._registry.clients

    def connection_stats(self) -> dict[str, dict[str, Any]]:
        """Client id -> that open connection's counters (:meth:`ClientSession.snapshot`):
        ``queued``, ``dropped``, ``rate_dropped``, ``rooms``. Find slow or flooding
        clients while they are connected."""
        return self._registry.connection_stats()

    # -- rooms ---------------------------------------------------------------------------
    @property
    def epoch(self) -> str:
        """Names this server's room histories (with a backplane, the cluster's): a client
        resuming a room from another epoch is told ``gap``."""
        return self._membership.epoch

    @epoch.setter
    def epoch(self, value: str) -> None:
        self._membership.epoch = value

    async def join_room(self, client_id: str, room_name: str) -> None:
        """Put a connected client into a room (it gets ``joined``; members ``user_joined``)."""
        await self._membership.join_room(client_id, room_name)

    async def leave_room(self, client_id: str, room_name: str) -> None:
        """Take a connected client out of a room (it gets ``left``; members ``user_left``)."""
        await self._membership.leave_room(client_id, room_name)

    @property
    def rooms(self) -> dict[str, set[str]]:
        """Room name -> ids of this server's members (a snapshot; empty rooms omitted)."""
        return self._membership.rooms

    @property
    def client_rooms(self) -> dict[str, set[str]]:
        """Client id -> rooms it is in (a snapshot) for this server's clients."""
        return self._registry.client_rooms()

    def room_sessions(self, room_name: str) -> dict[str, ClientSession]:
        """Client id -> session of this server's members of ``room_name`` (the live mapping:
        do not change it; empty when the room is unknown here)."""
        room = self._rooms.get(room_name)
        return room.members if room is not None else {}

    async def members(self, room_name: str) -> list[str]:
        """Ids of the room's members: on every node when a backplane is configured."""
        return await self._membership.members(room_name)

    def history(self, room_name: str) -> list[dict[str, Any]]:
        """The room's kept messages with their ``seq`` (oldest first), for inspection."""
        return self._membership.history(room_name)

    # -- sending -------------------------------------------------------------------------
    async def broadcast_to_room(
        self, room_name: str, message: dict[str, Any] | bytes, *, exclude: str | None = None
    ) -> None:
        """Send ``message`` to every member of ``room_name`` (on every node with a backplane).

        Dict messages get ``"room"`` set and a per-room sequence number (kept in the room's
        history for recovery); bytes go out as binary frames, without history. Never waits
        for a client: slow members' queues apply their strategy. ``exclude`` skips one id.
        """
        await self._broadcaster.broadcast_to_room(room_name, message, exclude=exclude)

    async def stream_to_room(
        self, room_name: str, data_stream: AsyncIterable[Any], *, message_type: str = "stream_chunk"
    ) -> int:
        """Broadcast each item of ``data_stream`` as ``{"type": message_type, "data": item,
        "timestamp": ...}``; returns how many were sent when the stream ends."""
        return await self._broadcaster.stream_to_room(
            room_name, data_stream, message_type=message_type
        )

    async def send_to_client(self, client_id: str, message: dict[str, Any] | bytes) -> bool:
        """Send to one client (on any node with a backplane); False if it is not connected."""
        return await self._broadcaster.send_to_client(client_id, message)

    def _deliver_room(self, room_name: str, out: OutMessage, exclude: str | None) -> int:
        # What the backplane delivers to this node (see Backplane).
        return self._broadcaster.deliver_room(room_name, out, exclude)

    def _deliver_direct(self, client_id: str, payload: dict[str, Any] | bytes) -> bool:
        return self._broadcaster.deliver_direct(client_id, payload)

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
        self._lifecycle.on_connect.append(fn)
        return fn

    def on_disconnect(self, fn: F) -> F:
        """Decorator: ``fn(client)`` runs after a client's connection closed and it left its rooms."""
        self._lifecycle.on_disconnect.append(fn)
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
                self._lifecycle.handle,
                cfg.port,
                host=cfg.host,
                compression=cfg.compression,
                extensions=_deflate_extensions(cfg),
                process_request=self._lifecycle.process_request,
                process_response=self._lifecycle.process_response,
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

    async def disconnect(self, client_id: str, code: int = 1000, reason: str = "") -> None:
        """Close a connected client's connection."""
        await self._registry.session(client_id).close(code, reason)

    def stop(self) -> None:
        """Ask :meth:`serve` to close every connection (1001 going away) and return."""
        self._stopped.set()

    async def abort(self) -> None:
        """Stop abruptly, like a crash: connections are dropped without a close frame."""
        for session in self._registry:
            await trio.aclose_forcefully(session.ws.stream)
        if self._ws_scope is not None:
            self._ws_scope.cancel()
        self._stopped.set()


class MultiRoomWebSocket(WebSocketManager):
    """The seed's name for a room-oriented WebSocket server: a :class:`WebSocketManager`.

    Example::

        >>> room_ws = MultiRoomWebSocket(port=0)
        >>> room_ws.rooms, room_ws.client_rooms
        ({}, {})
    """


def _deflate_extensions(cfg: ServerConfig) -> list[ServerExtensionFactory] | None:
    """permessage-deflate as websockets configures it by default (12-bit windows, memLevel
    5), with ``server_no_context_takeover`` unless ``deflate_context_takeover``."""
    if cfg.compression != "deflate":
        return None
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=not cfg.deflate_context_takeover,
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
    ]


__all__ = [
    "ClientInfo",
    "ClientSession",
    "MultiRoomWebSocket",
    "ServerStats",
    "WebSocketManager",
]
