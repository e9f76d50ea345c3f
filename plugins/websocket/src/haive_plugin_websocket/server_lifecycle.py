"""Connections coming and going on the server.

The opening handshake (:meth:`ConnectionLifecycle.process_request`) negotiates the protocol
features, checks the bearer token with ``authenticate`` (HTTP 401 when refused) and
settles the client id (HTTP 400 when invalid). With authentication the client id must
belong to the connection's identity (:mod:`.server_identity`): another identity's id is
refused with close 4003 before the connection touches anything. A connection then becomes
a :class:`~haive_plugin_websocket.server_session.ClientSession`: it replaces (close 4009)
an older connection with the same client id, is registered with the backplane, gets its
``welcome`` and runs the ``on_connect`` callbacks; when it ends it leaves its rooms and
``on_disconnect`` runs.
"""

from __future__ import annotations

import http
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.trio.server import ServerConnection

from ._connections import HaiveServerConnection
from .protocol import (
    CLIENT_ID_HEADER,
    CLOSE_TOO_BIG,
    FEATURES_HEADER,
    FEATURES_QUERY,
    parse_features,
    valid_client_id,
)
from .server_identity import ClientIdBinding, Refusal
from .server_membership import _quietly
from .server_session import ClientInfo, ClientSession

if TYPE_CHECKING:
    from .backplane import Backplane
    from .config import ServerConfig
    from .server import ServerStats
    from .server_incoming import IncomingRouter
    from .server_limits import ConnectionLimits
    from .server_membership import RoomMembership
    from .server_registry import ConnectionRegistry

log = logging.getLogger("haive.websocket.server")


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


@attrs.frozen
class _Handshake:
    client_id: str
    identity: Any
    features: frozenset[str]
    path: str


AuthenticateFn = Callable[[str | None], Any]


ConnectionCallback = Callable[[ClientSession], Any]


class ConnectionLifecycle:
    """A server's connections from the opening handshake to the end.

    Given the server's config and stats, its
    :class:`~haive_plugin_websocket.server_registry.ConnectionRegistry`,
    :class:`~haive_plugin_websocket.server_membership.RoomMembership` (a closed connection
    leaves its rooms), :class:`~haive_plugin_websocket.server_identity.ClientIdBinding`,
    :class:`~haive_plugin_websocket.server_limits.ConnectionLimits` and
    :class:`~haive_plugin_websocket.server_incoming.IncomingRouter` (each session's), its
    backplane, and ``authenticate`` (None: no authentication). websockets calls
    :meth:`process_request`, :meth:`process_response` and :meth:`handle`;
    :attr:`on_connect` / :attr:`on_disconnect` are the callbacks run for each client.

    Example (the handshake refuses a client without a token)::

        >>> import trio
        >>> from websockets.exceptions import InvalidStatus
        >>> from haive_plugin_websocket import StreamingClient, ConnectionConfig, WebSocketManager
        >>> async def main():
        ...     manager = WebSocketManager(port=0, authenticate=lambda token: token == "s3cret" or None)
        ...     async with manager.serving():
        ...         client = StreamingClient(ConnectionConfig(url=manager.url))
        ...         try:
        ...             async with client.connect():
        ...                 pass
        ...         except Exception as exc:
        ...             print(type(exc).__name__, manager.stats.errors["unauthorized"])
        >>> trio.run(main)
        ConnectionFailedError 1
    """

    def __init__(
        self,
        config: ServerConfig,
        stats: ServerStats,
        *,
        registry: ConnectionRegistry,
        membership: RoomMembership,
        binding: ClientIdBinding,
        limits: ConnectionLimits,
        incoming: IncomingRouter,
        backplane: Backplane | None,
        authenticate: AuthenticateFn | None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.registry = registry
        self.membership = membership
        self.binding = binding
        self.limits = limits
        self.incoming = incoming
        self.backplane = backplane
        self.authenticate = authenticate
        self.on_connect: list[ConnectionCallback] = []
        self.on_disconnect: list[ConnectionCallback] = []
        self._feature_sets: dict[frozenset[str], frozenset[str]] = {}

    # -- handshake -----------------------------------------------------------------------
    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request``: settle the features, identity and client id."""
        ws = _haive(conn)
        query = parse_qs(urlsplit(request.path).query)
        offered = parse_features(
            request.headers.get(FEATURES_HEADER) or _first(query.get(FEATURES_QUERY))
        )
        # Interned: a handful of distinct sets, not one per connection.
        features = frozenset(f for f in offered if f in self.config.features)
        features = self._feature_sets.setdefault(features, features)
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

    def process_response(
        self, conn: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        """websockets' ``process_response``: tell the client its features and client id."""
        handshake = _haive(conn).haive
        if handshake is not None and response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            response.headers[FEATURES_HEADER] = ", ".join(sorted(handshake.features))
            response.headers[CLIENT_ID_HEADER] = handshake.client_id
        return None

    # -- connection lifecycle ---------------------------------------------------------------
    async def handle(self, conn: ServerConnection) -> None:
        """Serve one connection that passed the handshake, until it closes."""
        ws = _haive(conn)
        handshake: _Handshake = ws.haive
        ws.haive = None
        try:
            remote = ws.remote_address
        except OSError:
            remote = None
        info = ClientInfo(
            handshake.client_id, handshake.identity, handshake.features, handshake.path, remote
        )
        owner = None
        if self.authenticate is not None:
            owner = await self._claim_client_id(ws, info)
            if owner is None:
                return
        session = ClientSession(
            ws,
            info,
            config=self.config,
            stats=self.stats,
            limits=self.limits,
        )
        session.owner = owner
        self.registry.add(session)
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
            await _call_all(self.on_connect, session)
            _forget_handshake(ws, self.config.keep_handshake_headers)
            # The reading loop is here, not in a method of the session: every idle
            # connection's task waits in it, and each coroutine it waits through is
            # another frame kept per connection.
            wait, recv, on_frame = ws.inbound.wait, ws.recv, self.incoming.on_frame
            drain = ws.inbound.drain
            try:
                while True:
                    # Idle, the task waits here (InboundFrames.wait), shallowly; recv()
                    # then returns what came at once, or waits for the rest of a
                    # fragmented message.
                    await wait()
                    await on_frame(session, await recv())
                    # The frames that came with it, without two checkpoints each (recv's):
                    # a client sending a frame per message pays them per message.
                    for raw in drain():
                        await on_frame(session, raw)
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
                    self.stats.errors["too_big"] += 1
        except trio.Cancelled:
            # The server is being torn down abruptly: do not leave the socket to the GC.
            await trio.aclose_forcefully(ws.stream)
            raise
        finally:
            session.closed = True
            session._out = None
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.close_timeout):
                await self._cleanup(session)

    async def _claim_client_id(self, ws: HaiveServerConnection, info: ClientInfo) -> str | None:
        """The owner key binding ``info.client_id`` to this connection's identity, or None
        after closing the connection (4003) because the id belongs to another identity."""
        claim = await self.binding.claim(info)
        if isinstance(claim, Refusal):
            await self._refuse(ws, claim.code, claim.reason)
            return None
        return claim

    async def _refuse(self, ws: HaiveServerConnection, code: int, reason: str) -> None:
        with trio.move_on_after(self.config.close_timeout):
            await ws.aclose(code, reason)
        await trio.aclose_forcefully(ws.stream)

    async def _cleanup(self, session: ClientSession) -> None:
        self.stats.connections_open -= 1
        cid = session.client_id
        if self.registry.remove(session):
            if session.owner is not None:
                self.binding.release(cid, session.owner)
            if self.backplane is not None:
                await _quietly(self.backplane.unregister_client(cid))
        for room in sorted(session.rooms):
            await self.membership.leave(session, room, reply=False)
        try:
            await _call_all(self.on_disconnect, session)
        except Exception:
            log.exception("an on_disconnect callback failed for %s", cid)


def _haive(conn: ServerConnection) -> HaiveServerConnection:
    # The server makes every connection a HaiveServerConnection (its create_connection).
    return cast(HaiveServerConnection, conn)


class _DroppedHeaders(Headers):
    """The handshake headers of a connection after they were dropped: empty, read-only."""

    __slots__ = ()

    def __init__(self) -> None:
        self._dict = {}
        self._list = []

    def _dropped(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "this connection's handshake headers were dropped after on_connect; "
            "WebSocketManager(keep_handshake_headers=True) keeps them"
        )

    __setitem__ = __delitem__ = clear = update = _dropped

    def copy(self) -> Headers:
        return Headers()  # a copy is the caller's own, writable


#: Shared by every connection: empty and read-only, so nothing is allocated per connection.
_DROPPED_HEADERS = _DroppedHeaders()
#: websockets' "handshake request received" event, once it has served: shared, set.
_REQUEST_RECEIVED = trio.Event()
_REQUEST_RECEIVED.set()


def _forget_handshake(ws: HaiveServerConnection, keep_headers: bool) -> None:
    # websockets keeps the opening handshake's request and response (about 4 KB with their
    # headers) for the connection's lifetime; only the request's presence matters after it.
    # Its request_rcvd event is only waited for during the handshake: every connection
    # can share one that is set.
    ws.request_rcvd = _REQUEST_RECEIVED
    if keep_headers:
        return
    if ws.request is not None:
        ws.request.headers = _DROPPED_HEADERS
    if ws.response is not None:
        ws.response.headers = _DROPPED_HEADERS


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


__all__ = ["AuthenticateFn", "ConnectionCallback", "ConnectionLifecycle"]
