"""Keeping a client connected: connect, serve the connection, reconnect, give up, close.

:meth:`ConnectionSupervisor.run` opens a connection (TCP to the URL's host, or the caller's
``open_stream``), negotiates the protocol features, re-joins the client's rooms resuming
from the last sequence number seen, then runs the writer, the reader and the heartbeat
until the connection drops. It then waits :func:`reconnect_delay` (exponential, capped,
jittered) and tries again, up to ``max_reconnect_attempts``. Some failures end the retries
at once: an HTTP status that retrying cannot fix, an untrusted TLS certificate, a newer
connection with the same client id replacing this one, or a client id that belongs to
another identity (close 4003).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import trio
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import CLOSED
from websockets.trio.client import connect as ws_connect

from ._connections import HaiveClientConnection, send_frames
from .config import ConnectionConfig
from .errors import ConnectionFailedError, TLSVerificationError
from .protocol import (
    CLIENT_ID_HEADER,
    CLOSE_CLIENT_ID_FORBIDDEN,
    CLOSE_REPLACED,
    FEATURES_HEADER,
)
from .tls import describe_tls_failure, tls_failure

if TYPE_CHECKING:

    from .client import ClientStats
    from .client_events import ConnectionEvents
    from .client_inbound import InboundDispatcher
    from .client_outbound import OutboundQueue
    from .client_requests import PendingRequests
    from .client_rooms import JoinedRooms
    from .client_state import ConnectionState

#: HTTP statuses that retrying cannot fix.
_FATAL_STATUSES = frozenset({400, 401, 403, 404, 405, 426})


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


class ConnectionSupervisor:
    """Keeps one client connected: connects, serves, reconnects with backoff, gives up, closes.

    Given the client's config, its
    :class:`~haive_plugin_websocket.client_state.ConnectionState` (which it attaches each
    connection to, and fails when giving up), stats and
    :class:`~haive_plugin_websocket.client_events.ConnectionEvents`; the parts that serve a
    connection: the :class:`~haive_plugin_websocket.client_outbound.OutboundQueue` (its
    writer), the :class:`~haive_plugin_websocket.client_inbound.InboundDispatcher` (its
    reader), the :class:`~haive_plugin_websocket.client_rooms.JoinedRooms` (re-joined
    first) and the :class:`~haive_plugin_websocket.client_requests.PendingRequests` (woken
    on give-up); the random source of the backoff jitter and ``open_stream`` (None: TCP,
    or TLS, to the URL's host).

    Example (a transport that never opens; virtual time, so no real waiting)::

        >>> import trio
        >>> import trio.testing
        >>> from haive_plugin_websocket import ClientStats, MessageHandler
        >>> from haive_plugin_websocket.client_events import ConnectionEvents
        >>> from haive_plugin_websocket.client_inbound import InboundDispatcher
        >>> from haive_plugin_websocket.client_outbound import OutboundQueue
        >>> from haive_plugin_websocket.client_requests import PendingRequests
        >>> from haive_plugin_websocket.client_rooms import JoinedRooms
        >>> from haive_plugin_websocket.client_state import ConnectionState
        >>> from haive_plugin_websocket.protocol import JSON
        >>> config = ConnectionConfig(url="ws://h/", max_reconnect_attempts=2)
        >>> state, stats, events = ConnectionState(client_id=None, max_batch_bytes=65536), ClientStats(), ConnectionEvents()
        >>> outbound = OutboundQueue(config, stats, JSON)
        >>> rooms, requests = JoinedRooms(state, outbound), PendingRequests(state, outbound)
        >>> inbound = InboundDispatcher(config.url, state, stats, MessageHandler(), events, rooms=rooms, requests=requests)
        >>> async def unreachable() -> trio.abc.Stream:
        ...     raise OSError("network is unreachable")
        >>> supervisor = ConnectionSupervisor(
        ...     config, state, stats, events, outbound=outbound, inbound=inbound, rooms=rooms,
        ...     requests=requests, rng=random.Random(0), open_stream=unreachable,
        ... )
        >>> trio.run(supervisor.run, clock=trio.testing.MockClock(autojump_threshold=0))
        Traceback (most recent call last):
        ...
        haive_plugin_websocket.errors.ConnectionFailedError: could not connect to ws://h/ after 2 reconnect attempts: OSError: network is unreachable
        >>> [event.kind for event in events.history]
        ['disconnected', 'reconnecting', 'disconnected', 'reconnecting', 'disconnected', 'gave_up']
    """

    def __init__(
        self,
        config: ConnectionConfig,
        state: ConnectionState,
        stats: ClientStats,
        events: ConnectionEvents,
        *,
        outbound: OutboundQueue,
        inbound: InboundDispatcher,
        rooms: JoinedRooms,
        requests: PendingRequests,
        rng: random.Random,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None,
    ) -> None:
        self.config = config
        self.state = state
        self.stats = stats
        self.events = events
        self.outbound = outbound
        self.inbound = inbound
        self.rooms = rooms
        self.requests = requests
        self._rng = rng
        self._open_stream = open_stream
        self._tls = config.tls_context
        self._run_scope: trio.CancelScope | None = None
        self._closing = False

    async def run(self, started: Callable[[], object] | None = None) -> None:
        """Connect, and reconnect whenever the connection drops, until :meth:`close`.

        ``started()`` is called once, when first connected. After giving up it fails the
        state, emits ``gave_up`` and returns (or raises, if never connected).
        """
        if self._run_scope is not None:
            raise RuntimeError(
                "this StreamingClient is already running; create one client per connection"
            )
        cfg = self.config
        attempt = 0
        connected_once = False
        with trio.CancelScope() as self._run_scope:
            while not self._closing:
                error: BaseException | None = None
                try:
                    stream = await self._open_stream() if self._open_stream is not None else None
                    async with self._open(stream) as ws:
                        attempt = 0
                        if not connected_once:
                            connected_once = True
                            if started is not None:
                                started()
                        # Our create_connection makes it a HaiveClientConnection.
                        await self._serve(cast(HaiveClientConnection, ws))
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in _FATAL_STATUSES:
                        self._give_up(
                            f"the server refused the connection: HTTP {status}", exc, attempt
                        )
                        if not connected_once:
                            raise self.state.failed from exc  # type: ignore[misc]
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
                    if not connected_once:
                        raise self.state.failed from error  # type: ignore[misc]
                    return
                close_code = _close_code(error)
                if close_code == CLOSE_REPLACED:
                    self.events.emit("replaced", error=_describe(error))
                    self._give_up(
                        "replaced by a newer connection with the same client id", error, attempt
                    )
                    return
                if close_code == CLOSE_CLIENT_ID_FORBIDDEN:
                    self._give_up(
                        f"the server refused client id {self.state.client_id!r} (close "
                        f"{close_code}): {_close_reason(error)}",
                        error,
                        attempt,
                    )
                    return
                self.events.emit("disconnected", attempt=attempt, error=_describe(error))
                attempt += 1
                if cfg.max_reconnect_attempts is not None and attempt > cfg.max_reconnect_attempts:
                    self._give_up(
                        f"could not connect to {cfg.url} after {cfg.max_reconnect_attempts} "
                        f"reconnect attempts: {_describe(error)}",
                        error,
                        attempt,
                    )
                    if not connected_once:
                        raise self.state.failed from error  # type: ignore[misc]
                    return
                delay = reconnect_delay(attempt, cfg, self._rng)
                self.events.emit("reconnecting", attempt=attempt, delay=delay, error=_describe(error))
                await trio.sleep(delay)

    def _give_up(
        self,
        message: str,
        error: BaseException | None,
        attempt: int,
        *,
        error_cls: type[ConnectionFailedError] = ConnectionFailedError,
    ) -> None:
        self.state.fail(error_cls(message))
        self.events.emit("gave_up", attempt=attempt, error=_describe(error))
        # Wake everyone waiting for a room or a reply: they raise `failed`.
        self.rooms.wake_waiters()
        self.requests.wake_waiters()

    def _open(self, stream: trio.abc.Stream | None) -> ws_connect:
        cfg = self.config
        headers: list[tuple[str, str]] = []
        offered = cfg.offered_features
        if offered:
            headers.append((FEATURES_HEADER, ", ".join(offered)))
        if self.state.client_id is not None:
            headers.append((CLIENT_ID_HEADER, self.state.client_id))
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
        state = self.state
        headers = ws.response.headers if ws.response is not None else None
        state.negotiate(
            offered=cfg.offered_features,
            accepted=headers.get(FEATURES_HEADER) if headers is not None else None,
            assigned_id=headers.get(CLIENT_ID_HEADER) if headers is not None else None,
        )
        # Re-join rooms before anything queued goes out, resuming where we left off.
        rejoin = self.rooms.resume_messages()
        if rejoin:
            await send_frames(ws, state.encode(rejoin))
        state.attach(ws)
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
            self.events.emit("reconnected")
        else:
            self.events.emit("connected")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outbound.writer, ws, state.wire_codec, state.batch)
                if cfg.heartbeat_interval is not None:
                    nursery.start_soon(self._heartbeat, ws, nursery.cancel_scope)
                try:
                    await self.inbound.read(ws)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            state.detach()
            self.rooms.connection_lost()
        if ws.state is CLOSED:
            raise ws.close_exc  # tells run() how the connection ended (close code, cause)

    async def close(self) -> None:
        """Flush what is queued (for up to ``close_timeout``), close, stop reconnecting."""
        self._closing = True
        ws = self.state.ws
        if ws is not None:
            with trio.move_on_after(self.config.close_timeout):
                await self.outbound.flush(lambda: self.state.connected)
            with trio.move_on_after(self.config.close_timeout):
                await ws.aclose()
        if self._run_scope is not None:
            self._run_scope.cancel()
        await trio.lowlevel.checkpoint()

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
                self.events.emit("heartbeat_timeout", error=f"no pong within {timeout:g} s")
                # The peer is gone or stuck: drop the TCP connection now, no close handshake.
                await trio.aclose_forcefully(ws.stream)
                cancel_scope.cancel()
                return


def _close_code(error: BaseException | None) -> int | None:
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return error.rcvd.code
    return None


def _close_reason(error: BaseException | None) -> str:
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return error.rcvd.reason
    return ""


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


__all__ = ["ConnectionSupervisor", "reconnect_delay"]
