"""The WebSocket server: connections, rooms, typed handlers, recovery, limits, auth.

Each connection's handler reads frames and routes messages to handlers. Messages for a
client go into that connection's bounded outbound queue (the core's ``BoundedBuffer``),
drained by a writer task that exists only while something is queued; it coalesces what is
queued into batch frames when the client negotiated ``batch``. Broadcasts only append to
queues and never wait for a client, so a slow client cannot stall a broadcast: its queue's
strategy (drop-oldest, drop-newest, disconnect) decides. An idle connection costs
websockets' own connection objects plus one small session object.

This module is the facade: :class:`WebSocketManager` (its configuration, registration and
serving) is assembled from one part per concern, each in its own module:

* :mod:`.server_session`: :class:`ClientInfo`, :class:`ClientSession` (one connection's
  outbound queue, writer and closing);
* :mod:`.server_lifecycle`: the handshake (authentication, client id, features) and a
  connection's start and end;
* :mod:`.server_incoming`: parsing and routing incoming messages to handlers;
* :mod:`.server_control`: the protocol's control messages and room authorization;
* :mod:`.server_membership`: joining and leaving rooms, with recovery replay;
* :mod:`.server_broadcast`: broadcasts, streams and direct messages;
* :mod:`.server_limits`: slow consumers and flood control.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import trio
from websockets.trio.server import Server, serve

from haive.dataflow.runtime.backpressure import BackpressureStrategy

from ._connections import HaiveServerConnection, unwrap_single_error
from .config import ServerConfig
from .errors import NotServingError
from .handlers import MessageHandler
from .protocol import CONTROL_TYPES
from .rooms import RoomTable
from .server_broadcast import _BroadcastMixin
from .server_control import AuthorizeFn, _ControlMixin
from .server_identity import ClientIdReservations, IdentityKeyFn
from .server_identity import identity_key as default_identity_key
from .server_incoming import _IncomingMixin
from .server_lifecycle import AuthenticateFn, _LifecycleMixin
from .server_limits import _DisconnectOnOverflow, _LimitsMixin
from .server_membership import _MembershipMixin
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


class WebSocketManager(
    _LifecycleMixin,
    _IncomingMixin,
    _ControlMixin,
    _MembershipMixin,
    _BroadcastMixin,
    _LimitsMixin,
):
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
        self.authenticate = authenticate
        self.authorize_room = authorize_room
        self.backplane = backplane
        self.identity_key = identity_key
        self._reserved_ids = ClientIdReservations(config.client_id_ttl)
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

    def connection_stats(self) -> dict[str, dict[str, Any]]:
        """Client id -> that open connection's counters (:meth:`ClientSession.snapshot`):
        ``queued``, ``dropped``, ``rate_dropped``, ``rooms``. Find slow or flooding
        clients while they are connected."""
        return {cid: session.snapshot() for cid, session in self.clients.items()}

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


class MultiRoomWebSocket(WebSocketManager):
    """The seed's name for a room-oriented WebSocket server: a :class:`WebSocketManager`.

    Example::

        >>> room_ws = MultiRoomWebSocket(port=0)
        >>> room_ws.rooms, room_ws.client_rooms
        ({}, {})
    """


__all__ = [
    "ClientInfo",
    "ClientSession",
    "MultiRoomWebSocket",
    "ServerStats",
    "WebSocketManager",
]
